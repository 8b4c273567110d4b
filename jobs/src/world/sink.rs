//! Where generated records go.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use tidemark_sources::filelog::partition_file_name;

/// Receives generated ingress records.
pub trait RecordSink {
    /// Appends one record with `key` to `partition`; `producer` is the producer the record
    /// names (`""` if none), whose key a signing sink uses.
    fn write(
        &mut self,
        partition: u32,
        key: &[u8],
        record_ts: u64,
        value: &[u8],
        producer: &str,
    ) -> std::io::Result<()>;
    /// The generator's simulated clock reached `sim_ms` (monotone). A paced sink waits here
    /// until the wall clock catches up.
    fn at(&mut self, _sim_ms: u64) -> std::io::Result<()> {
        Ok(())
    }
    /// Flushes everything.
    fn finish(&mut self) -> std::io::Result<()>;
}

/// Writes a partitioned file log (see `tidemark_sources::filelog`).
pub struct FileLogSink {
    files: Vec<BufWriter<File>>,
}

impl FileLogSink {
    /// Creates `dir` and one empty file per partition; fails if partition files already exist.
    pub fn create(dir: &Path, partitions: u32) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut files = Vec::new();
        for p in 0..partitions {
            let path: PathBuf = dir.join(partition_file_name(p));
            let f = File::options()
                .write(true)
                .create_new(true)
                .open(&path)
                .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
            files.push(BufWriter::with_capacity(1 << 20, f));
        }
        Ok(FileLogSink { files })
    }
}

impl RecordSink for FileLogSink {
    fn write(
        &mut self,
        partition: u32,
        _key: &[u8],
        record_ts: u64,
        value: &[u8],
        _producer: &str,
    ) -> std::io::Result<()> {
        let n = self.files.len();
        let f = &mut self.files[partition as usize % n];
        f.write_all(itoa::Buffer::new().format(record_ts).as_bytes())?;
        f.write_all(b"\t")?;
        f.write_all(value)?;
        f.write_all(b"\n")
    }
    fn finish(&mut self) -> std::io::Result<()> {
        for f in &mut self.files {
            f.flush()?;
        }
        Ok(())
    }
}

/// Discards records (for measuring the generator alone).
pub struct NullSink(pub u64);

impl RecordSink for NullSink {
    fn write(
        &mut self,
        _p: u32,
        _k: &[u8],
        _ts: u64,
        value: &[u8],
        _by: &str,
    ) -> std::io::Result<()> {
        self.0 += value.len() as u64;
        Ok(())
    }
    fn finish(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A record waiting for its send time: `(record_ts, seq, partition, key, value, producer)`.
type Deferred = (u64, u64, u32, Vec<u8>, Vec<u8>, String);

/// Produces generated records to a Kafka topic: record `(partition, key, record_ts)` goes to
/// that partition with that key and record timestamp. Unpaced, records are sent in generation
/// order, so the topic holds exactly what the file log would (same partitions, same offsets
/// on a fresh topic). Paced, each record waits until the wall clock reaches its record
/// timestamp (live traffic: the world's simulated clock must then start at "now") and is
/// stamped with the wall clock at the send. With a keyring ([`KafkaWorldSink::signing`]) each
/// record is signed with its producer's key at its record timestamp; a record naming a
/// producer without a key goes out unsigned (IG quarantines it `BAD_SIGNATURE`).
pub struct KafkaWorldSink {
    producer: std::sync::Arc<tidemark_sinks::kafka::KafkaProducer>,
    keys: Option<std::sync::Arc<tidemark_dataflows::ig::Keyring>>,
    topic: String,
    paced: bool,
    pending: std::collections::BinaryHeap<std::cmp::Reverse<Deferred>>,
    seq: u64,
    /// Records sent so far.
    pub sent: u64,
}

impl KafkaWorldSink {
    /// A sink producing to `topic`; `paced` sends each record at its record timestamp.
    pub fn new(
        producer: std::sync::Arc<tidemark_sinks::kafka::KafkaProducer>,
        topic: &str,
        paced: bool,
    ) -> Self {
        KafkaWorldSink {
            producer,
            keys: None,
            topic: topic.to_owned(),
            paced,
            pending: Default::default(),
            seq: 0,
            sent: 0,
        }
    }

    /// Signs every record with `keys` (the producer it names).
    pub fn signing(
        mut self,
        keys: Option<std::sync::Arc<tidemark_dataflows::ig::Keyring>>,
    ) -> Self {
        self.keys = keys;
        self
    }

    fn send(
        &mut self,
        partition: u32,
        key: &[u8],
        ts: u64,
        value: &[u8],
        by: &str,
    ) -> std::io::Result<()> {
        // Live: the record timestamp is when the record is really sent (never before the
        // event's own time), as a producer's clock would stamp it; latency is measured from it.
        let ts = if self.paced {
            ts.max(crate::wallclock::now_ms())
        } else {
            ts
        };
        let headers = match &self.keys {
            Some(k) => k.sign(by, ts, value).unwrap_or_default(),
            None => Vec::new(),
        };
        self.producer
            .send_with_headers(
                &self.topic,
                Some(partition as i32),
                key,
                value,
                Some(ts as i64),
                &headers,
            )
            .map_err(std::io::Error::other)?;
        self.sent += 1;
        Ok(())
    }

    fn send_due(&mut self, now: u64) -> std::io::Result<()> {
        while self.pending.peek().is_some_and(|r| r.0 .0 <= now) {
            if let Some(std::cmp::Reverse((ts, _, p, key, value, by))) = self.pending.pop() {
                self.send(p, &key, ts, &value, &by)?;
            }
        }
        Ok(())
    }
}

fn sleep_until(ms: u64) {
    loop {
        let now = crate::wallclock::now_ms();
        if now >= ms {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis((ms - now).min(50)));
    }
}

impl RecordSink for KafkaWorldSink {
    fn write(
        &mut self,
        partition: u32,
        key: &[u8],
        record_ts: u64,
        value: &[u8],
        producer: &str,
    ) -> std::io::Result<()> {
        if !self.paced {
            return self.send(partition, key, record_ts, value, producer);
        }
        self.seq += 1;
        self.pending.push(std::cmp::Reverse((
            record_ts,
            self.seq,
            partition,
            key.to_vec(),
            value.to_vec(),
            producer.to_owned(),
        )));
        self.send_due(crate::wallclock::now_ms())
    }
    fn at(&mut self, sim_ms: u64) -> std::io::Result<()> {
        if self.paced {
            sleep_until(sim_ms);
            self.send_due(crate::wallclock::now_ms())?;
        }
        Ok(())
    }
    fn finish(&mut self) -> std::io::Result<()> {
        while let Some(std::cmp::Reverse((ts, ..))) = self.pending.peek() {
            sleep_until(*ts);
            self.send_due(crate::wallclock::now_ms())?;
        }
        self.producer
            .finish(std::time::Duration::from_secs(300))
            .map(|_| ())
            .map_err(std::io::Error::other)
    }
}
