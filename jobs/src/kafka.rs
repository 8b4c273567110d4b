//! Kafka helpers of the jobs: producing a world into the ingress topic and reading a topic
//! back in full.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use tidemark_dataflows::ig::Keyring;
use tidemark_operators::RawRecord;
use tidemark_sinks::kafka::KafkaProducer;
use tidemark_sources::{
    KafkaConn, KafkaEnd, KafkaSource, KafkaStart, PartitionedSource, ReadStatus,
};

use crate::broker::topics;
use crate::world::{generate, KafkaWorldSink, Pattern, RecordSink, WorldConfig, WorldStats};

/// Records per partition the world `cfg` generates (a dry run; the generator is deterministic).
pub fn world_counts(cfg: &WorldConfig) -> Result<BTreeMap<u32, u64>> {
    struct Count(BTreeMap<u32, u64>);
    impl RecordSink for Count {
        fn write(
            &mut self,
            p: u32,
            _k: &[u8],
            _ts: u64,
            _v: &[u8],
            _by: &str,
        ) -> std::io::Result<()> {
            *self.0.entry(p).or_default() += 1;
            Ok(())
        }
        fn finish(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count((0..cfg.partitions).map(|p| (p, 0)).collect());
    generate(cfg, &mut c, &mut |_, _| {})?;
    Ok(c.0)
}

/// The start time of a live world begun now: one second ahead, so that the records of its
/// first half second are not held back while the producer gets its producer id
/// ([`KafkaProducer::wait_ready`]) and then sent in a burst.
pub fn live_start_ms() -> u64 {
    crate::wallclock::now_ms() + 1_000
}

/// Produces the world `cfg` into the ingress topic. `paced`: each record is sent when the wall
/// clock reaches its record timestamp (give the world a `start_ms` of [`live_start_ms`]). With `keys`,
/// every record is signed by the key of the producer it names.
pub fn produce_world(
    conn: &KafkaConn,
    cfg: &WorldConfig,
    paced: bool,
    keys: Option<Arc<Keyring>>,
    truth: &mut dyn FnMut(&str, Pattern),
) -> Result<WorldStats> {
    conn.check()?;
    let parts = KafkaSource::new(
        conn.clone(),
        topics::INGRESS,
        KafkaStart::Beginning,
        KafkaEnd::Latest,
    )
    .partition_count()?;
    if parts != cfg.partitions {
        bail!(
            "{} has {parts} partitions but the world has {}",
            topics::INGRESS,
            cfg.partitions
        );
    }
    let producer = Arc::new(KafkaProducer::new(&conn.client_config())?);
    // A paced world starts its clock when it starts sending: the producer must be able to
    // send by then, as a long-running upstream producer would.
    producer.wait_ready(conn.request_timeout)?;
    let mut sink = KafkaWorldSink::new(producer, topics::INGRESS, paced).signing(keys);
    generate(cfg, &mut sink, truth).context("producing the world to Kafka")
}

/// Reads every record of `topic` from the beginning up to the high watermarks taken now,
/// partition by partition.
pub fn read_topic(conn: &KafkaConn, topic: &str) -> Result<Vec<RawRecord>> {
    let src = KafkaSource::new(conn.clone(), topic, KafkaStart::Beginning, KafkaEnd::Latest);
    let mut out = Vec::new();
    for p in src.partitions()? {
        let mut r = src.open(p)?;
        let t0 = Instant::now();
        loop {
            match r.poll(4096, &mut out)? {
                ReadStatus::End => break,
                ReadStatus::Records => {}
                ReadStatus::Idle => {
                    if t0.elapsed() > conn.retry_for {
                        bail!("reading {topic}/{p} stalled at offset {}", r.next_offset());
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        }
    }
    Ok(out)
}
