//! The Kafka source: a topic as a [`PartitionedSource`], read through rdkafka.
//!
//! Every partition is read by its own consumer with a manual assignment (no consumer group,
//! no committed offsets: the run's basis is the record of what was consumed), from a start
//! position ([`KafkaStart`]) up to an optional end ([`KafkaEnd`]) for bounded runs. Record
//! timestamps are the Kafka record timestamps (create time as the producer set it).
//!
//! Failures never become silent gaps: `auto.offset.reset=error` turns a start offset that the
//! broker no longer has into an error, an offset that skips ahead of the next expected one is
//! an error, and broker errors (a restarting broker, a dropped connection) are retried with
//! backoff and logged until `retry_for` has passed without progress, after which the partition
//! fails the run.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use tidemark_operators::{RawRecord, SourceCoord};

use crate::error::SourceError;
use crate::source::{PartitionReader, PartitionedSource, ReadStatus};

/// Where each partition starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KafkaStart {
    /// The first offset the broker still has.
    Beginning,
    /// Explicit offsets per partition (a previous run's basis end); partitions not listed start
    /// at the beginning.
    Offsets(BTreeMap<u32, u64>),
}

/// Where each partition ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KafkaEnd {
    /// Never: the online service.
    Unbounded,
    /// The high watermark of each partition when the reader opens it (a bounded catch-up).
    Latest,
    /// Explicit end offsets (exclusive); partitions not listed end at their start.
    Offsets(BTreeMap<u32, u64>),
}

/// Parses `P:O,P:O,…` into a partition → offset map.
pub fn parse_offsets(s: &str) -> Result<BTreeMap<u32, u64>, String> {
    let mut out = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|x| !x.is_empty()) {
        let (p, o) = part
            .split_once(':')
            .ok_or_else(|| format!("expected PARTITION:OFFSET, got {part:?}"))?;
        let p: u32 = p
            .parse()
            .map_err(|_| format!("bad partition in {part:?}"))?;
        let o: u64 = o.parse().map_err(|_| format!("bad offset in {part:?}"))?;
        if out.insert(p, o).is_some() {
            return Err(format!("partition {p} listed twice"));
        }
    }
    Ok(out)
}

/// Connection settings of a Kafka source or sink.
#[derive(Clone, Debug)]
pub struct KafkaConn {
    /// `bootstrap.servers`.
    pub brokers: String,
    /// Timeout of metadata and watermark requests.
    pub request_timeout: Duration,
    /// How long broker errors are retried without progress before the run fails.
    pub retry_for: Duration,
    /// Extra librdkafka properties (security settings from the environment, tuning).
    pub extra: BTreeMap<String, String>,
}

impl KafkaConn {
    /// Loopback defaults for `brokers`.
    pub fn new(brokers: impl Into<String>) -> Self {
        KafkaConn {
            brokers: brokers.into(),
            request_timeout: Duration::from_secs(10),
            retry_for: Duration::from_secs(120),
            extra: BTreeMap::new(),
        }
    }

    /// A librdkafka client configuration with the bootstrap servers and extra properties.
    pub fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers);
        c.set("socket.connection.setup.timeout.ms", "5000");
        for (k, v) in &self.extra {
            c.set(k, v);
        }
        c
    }
}

/// A client context that keeps the last error librdkafka reported through its error callback
/// (an authentication failure, a protocol mismatch), which a timed-out request alone does not
/// say.
#[derive(Default)]
struct LastError(std::sync::Mutex<Option<String>>);

impl rdkafka::ClientContext for LastError {
    fn error(&self, error: KafkaError, reason: &str) {
        if let Ok(mut g) = self.0.lock() {
            *g = Some(format!("{error}: {reason}"));
        }
    }
}

impl rdkafka::consumer::ConsumerContext for LastError {}

impl KafkaConn {
    /// Connects and fetches the cluster's metadata within `request_timeout`, or fails with
    /// the client's own reason and the security settings in use. Called before anything that
    /// could otherwise wait without end (admin requests, producers) on a misconfigured client.
    pub fn check(&self) -> Result<(), SourceError> {
        let c: BaseConsumer<LastError> = self
            .client_config()
            .create_with_context(LastError::default())
            .map_err(|e| SourceError::Kafka {
                topic: self.brokers.clone(),
                message: format!("cannot create a Kafka client{}: {e}", self.security_note()),
            })?;
        match c.fetch_metadata(None, self.request_timeout) {
            Ok(_) => Ok(()),
            Err(e) => {
                let reason = c.context().0.lock().ok().and_then(|g| g.clone());
                Err(SourceError::Kafka {
                    topic: self.brokers.clone(),
                    message: format!(
                        "cannot reach the broker within {:?}{}: {}",
                        self.request_timeout,
                        self.security_note(),
                        reason.unwrap_or_else(|| e.to_string())
                    ),
                })
            }
        }
    }

    /// ` (security.protocol=…, sasl.mechanism=…)` when set: the usual suspects.
    fn security_note(&self) -> String {
        let set: Vec<String> = ["security.protocol", "sasl.mechanism"]
            .iter()
            .filter_map(|k| Some(format!("{k}={}", self.extra.get(*k)?)))
            .collect();
        if set.is_empty() {
            String::new()
        } else {
            format!(
                " ({}; check them against the broker's listener)",
                set.join(", ")
            )
        }
    }
}

/// A Kafka topic as a partitioned log.
pub struct KafkaSource {
    conn: KafkaConn,
    topic: String,
    start: KafkaStart,
    end: KafkaEnd,
}

fn kafka_err(topic: &str, what: &str, e: KafkaError) -> SourceError {
    SourceError::Kafka {
        topic: topic.to_owned(),
        message: format!("{what}: {e}"),
    }
}

impl KafkaSource {
    /// A source over `topic`.
    pub fn new(
        conn: KafkaConn,
        topic: impl Into<String>,
        start: KafkaStart,
        end: KafkaEnd,
    ) -> Self {
        KafkaSource {
            conn,
            topic: topic.into(),
            start,
            end,
        }
    }

    fn consumer(&self) -> Result<BaseConsumer, SourceError> {
        let mut c = self.conn.client_config();
        c.set("group.id", "tidemark-source")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "error")
            .set("enable.partition.eof", "false")
            .set("fetch.wait.max.ms", "2")
            .set("fetch.min.bytes", "1");
        c.create()
            .map_err(|e| kafka_err(&self.topic, "cannot create consumer", e))
    }

    /// The partition count of the topic; a missing topic or an unreachable broker is an error.
    pub fn partition_count(&self) -> Result<u32, SourceError> {
        let c = self.consumer()?;
        topic_partitions(&c, &self.topic, self.conn.request_timeout)
    }

    /// The high watermark (next offset to be written) of every partition.
    pub fn high_watermarks(&self) -> Result<BTreeMap<u32, u64>, SourceError> {
        let c = self.consumer()?;
        let n = topic_partitions(&c, &self.topic, self.conn.request_timeout)?;
        let mut out = BTreeMap::new();
        for p in 0..n {
            let (_, high) = c
                .fetch_watermarks(&self.topic, p as i32, self.conn.request_timeout)
                .map_err(|e| kafka_err(&self.topic, &format!("watermarks of partition {p}"), e))?;
            out.insert(p, high.max(0) as u64);
        }
        Ok(out)
    }
}

/// The number of partitions of `topic`, with clear errors for a missing topic or broker.
pub fn topic_partitions<C: Consumer>(
    c: &C,
    topic: &str,
    timeout: Duration,
) -> Result<u32, SourceError> {
    let md = c
        .fetch_metadata(Some(topic), timeout)
        .map_err(|e| SourceError::Kafka {
            topic: topic.to_owned(),
            message: format!("cannot reach the broker (metadata request failed: {e})"),
        })?;
    let t = md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .ok_or_else(|| SourceError::MissingTopic(topic.to_owned()))?;
    if let Some(err) = t.error() {
        return Err(match err {
            rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART => {
                SourceError::MissingTopic(topic.to_owned())
            }
            e => SourceError::Kafka {
                topic: topic.to_owned(),
                message: format!("metadata error: {e:?}"),
            },
        });
    }
    if t.partitions().is_empty() {
        return Err(SourceError::MissingTopic(topic.to_owned()));
    }
    Ok(t.partitions().len() as u32)
}

impl PartitionedSource for KafkaSource {
    fn partitions(&self) -> Result<Vec<u32>, SourceError> {
        Ok((0..self.partition_count()?).collect())
    }

    fn open(&self, partition: u32) -> Result<Box<dyn PartitionReader>, SourceError> {
        self.open_from(partition, None)
    }

    fn open_at(
        &self,
        partition: u32,
        offset: u64,
    ) -> Result<Box<dyn PartitionReader>, SourceError> {
        self.open_from(partition, Some(offset))
    }
}

impl KafkaSource {
    fn open_from(
        &self,
        partition: u32,
        at: Option<u64>,
    ) -> Result<Box<dyn PartitionReader>, SourceError> {
        let consumer = self.consumer()?;
        let timeout = self.conn.request_timeout;
        let (low, high) = consumer
            .fetch_watermarks(&self.topic, partition as i32, timeout)
            .map_err(|e| {
                kafka_err(
                    &self.topic,
                    &format!("watermarks of partition {partition}"),
                    e,
                )
            })?;
        let (low, high) = (low.max(0) as u64, high.max(0) as u64);
        let start = match (&self.start, at) {
            (_, Some(o)) => o,
            (KafkaStart::Beginning, None) => low,
            (KafkaStart::Offsets(m), None) => m.get(&partition).copied().unwrap_or(low),
        };
        if start < low {
            return Err(SourceError::BadInput {
                path: format!("{}/{partition}", self.topic),
                message: format!(
                    "start offset {start} is below the oldest offset the broker still has ({low}): those records are gone"
                ),
            });
        }
        let end = match &self.end {
            KafkaEnd::Unbounded => None,
            KafkaEnd::Latest => Some(high),
            KafkaEnd::Offsets(m) => Some(m.get(&partition).copied().unwrap_or(start)),
        };
        if let Some(e) = end {
            if e < start {
                return Err(SourceError::BadInput {
                    path: format!("{}/{partition}", self.topic),
                    message: format!("end offset {e} is below the start offset {start}"),
                });
            }
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.topic, partition as i32, Offset::Offset(start as i64))
            .map_err(|e| kafka_err(&self.topic, "assignment", e))?;
        consumer
            .assign(&tpl)
            .map_err(|e| kafka_err(&self.topic, "assignment", e))?;
        Ok(Box::new(KafkaReader {
            consumer,
            topic: self.topic.clone(),
            partition,
            next: start,
            end,
            retry_for: self.conn.retry_for,
            failing_since: None,
        }))
    }
}

struct KafkaReader {
    consumer: BaseConsumer,
    topic: String,
    partition: u32,
    next: u64,
    end: Option<u64>,
    retry_for: Duration,
    failing_since: Option<Instant>,
}

impl KafkaReader {
    fn at_end(&self) -> bool {
        self.end.is_some_and(|e| self.next >= e)
    }
}

impl PartitionReader for KafkaReader {
    fn partition(&self) -> u32 {
        self.partition
    }

    fn next_offset(&self) -> u64 {
        self.next
    }

    fn poll(&mut self, max: usize, out: &mut Vec<RawRecord>) -> Result<ReadStatus, SourceError> {
        if self.at_end() {
            return Ok(ReadStatus::End);
        }
        let mut got = 0usize;
        while got < max && !self.at_end() {
            let Some(res) = self.consumer.poll(Duration::ZERO) else {
                break;
            };
            match res {
                Ok(msg) => {
                    self.failing_since = None;
                    let off = msg.offset().max(0) as u64;
                    if off < self.next {
                        // A re-delivery after a reconnect: already consumed, skip it.
                        continue;
                    }
                    if off > self.next {
                        return Err(SourceError::BadInput {
                            path: format!("{}/{}", self.topic, self.partition),
                            message: format!(
                                "offset gap: expected offset {}, the broker delivered {off}",
                                self.next
                            ),
                        });
                    }
                    let record_ts = msg.timestamp().to_millis().unwrap_or(0).max(0) as u64;
                    out.push(RawRecord {
                        coord: SourceCoord {
                            partition: self.partition,
                            offset: off,
                        },
                        record_ts,
                        bytes: msg.payload().unwrap_or_default().to_vec(),
                        headers: record_headers(&msg),
                    });
                    self.next = off + 1;
                    got += 1;
                }
                Err(e) => {
                    let since = *self.failing_since.get_or_insert_with(Instant::now);
                    if is_fatal(&e) || since.elapsed() >= self.retry_for {
                        return Err(SourceError::Kafka {
                            topic: format!("{}/{}", self.topic, self.partition),
                            message: format!(
                                "consuming at offset {} failed for {:.1}s: {e}",
                                self.next,
                                since.elapsed().as_secs_f64()
                            ),
                        });
                    }
                    tracing::warn!(
                        topic = %self.topic,
                        partition = self.partition,
                        offset = self.next,
                        "broker error, retrying: {e}"
                    );
                    std::thread::sleep(Duration::from_millis(50));
                    break;
                }
            }
        }
        Ok(if self.at_end() {
            ReadStatus::End
        } else if got > 0 {
            ReadStatus::Records
        } else {
            ReadStatus::Idle
        })
    }
}

/// Errors a retry cannot fix: the offset is gone, the topic or partition is gone.
fn is_fatal(e: &KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode as C;
    matches!(
        e.rdkafka_error_code(),
        Some(
            C::OffsetOutOfRange
                | C::UnknownTopicOrPartition
                | C::UnknownPartition
                | C::UnknownTopic
        )
    )
}

/// A Kafka message's headers as (name, value) pairs; a header without a value reads as empty.
fn record_headers(msg: &rdkafka::message::BorrowedMessage<'_>) -> Vec<(String, Vec<u8>)> {
    use rdkafka::message::{Headers, Message};
    msg.headers().map_or_else(Vec::new, |h| {
        h.iter()
            .map(|x| (x.key.to_owned(), x.value.unwrap_or_default().to_vec()))
            .collect()
    })
}
