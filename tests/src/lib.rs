//! Shared helpers for tidemark's end-to-end tests: building ingress logs, running the job,
//! reading outputs back.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use tidemark_jobs::config::Profile;
use tidemark_jobs::run::{run, Ingress, RunOutcome};
use tidemark_jobs::world::{generate, FileLogSink, WorldConfig};
use tidemark_operators::ingest::Receipt;
use tidemark_sinks::parquet::decode_receipts;
use tidemark_sources::filelog::partition_file_name;

/// Generates a world into `dir`.
pub fn make_world(dir: &Path, cfg: &WorldConfig) {
    let mut sink = FileLogSink::create(dir, cfg.partitions).expect("create log");
    generate(cfg, &mut sink, &mut |_, _| {}).expect("generate");
}

/// Writes a log from explicit records: `partitions[p] = [(record_ts, bytes)]`.
pub fn write_log(dir: &Path, partitions: &[Vec<(u64, Vec<u8>)>]) {
    std::fs::create_dir_all(dir).expect("mkdir");
    for (p, recs) in partitions.iter().enumerate() {
        let mut f = std::fs::File::create(dir.join(partition_file_name(p as u32))).expect("create");
        for (ts, bytes) in recs {
            write!(f, "{ts}\t").expect("write");
            f.write_all(bytes).expect("write");
            f.write_all(b"\n").expect("write");
        }
    }
}

/// Reads a log back: `[(record_ts, bytes)]` per partition.
pub fn read_log(dir: &Path) -> Vec<Vec<(u64, Vec<u8>)>> {
    let mut out = Vec::new();
    for p in 0.. {
        let path = dir.join(partition_file_name(p));
        let Ok(text) = std::fs::read(&path) else {
            break;
        };
        let recs = text
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| {
                let tab = l.iter().position(|b| *b == b'\t').expect("tab");
                let ts = std::str::from_utf8(&l[..tab])
                    .expect("utf8")
                    .parse()
                    .expect("ts");
                (ts, l[tab + 1..].to_vec())
            })
            .collect();
        out.push(recs);
    }
    out
}

/// Runs IG over `ingress` into `data`.
pub fn run_ig(profile: &Profile, ingress: &Path, data: &Path, workers: usize) -> RunOutcome {
    run(
        profile,
        &Ingress::File(ingress.to_path_buf()),
        data,
        workers,
    )
    .expect("run")
}

/// Every file under `root/sub` as relative path → bytes.
pub fn read_tree(root: &Path, sub: &str) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack: Vec<PathBuf> = vec![root.join(sub)];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let rel = path
                    .strip_prefix(root)
                    .expect("prefix")
                    .display()
                    .to_string();
                out.insert(rel, std::fs::read(&path).expect("read"));
            }
        }
    }
    out
}

/// All receipts under `data/ig/receipts`, sorted by (partition, offset).
pub fn read_receipts(data: &Path) -> Vec<Receipt> {
    let mut all = Vec::new();
    for (path, bytes) in read_tree(data, "ig/receipts") {
        all.extend(decode_receipts(bytes.into(), &path).expect("decode"));
    }
    all.sort_by_key(|r| r.coord);
    all
}

/// All audit records under `data/dla/audit`, sorted by (logical_time, event_id).
pub fn read_audit(data: &Path) -> Vec<tidemark_operators::decision::AuditRecord> {
    let mut all = Vec::new();
    for (path, bytes) in read_tree(data, "dla/audit") {
        all.extend(tidemark_sinks::audit::decode_audit(bytes.into(), &path).expect("decode audit"));
    }
    all.sort();
    all
}

/// All admitted events under `data/archive`, sorted by (logical_time, event_id, coord).
pub fn read_archive(data: &Path) -> Vec<tidemark_operators::ingest::Admitted> {
    let mut all = Vec::new();
    for (path, bytes) in read_tree(data, "archive") {
        if path.ends_with(".parquet") {
            all.extend(
                tidemark_sinks::parquet::decode_archive(bytes.into(), &path)
                    .expect("decode archive"),
            );
        }
    }
    all.sort();
    all
}

/// A tansu broker on a free loopback port with SQLite storage in a temporary directory, the
/// local profile's topics created.
pub struct KafkaFixture {
    /// The broker process (stopped on drop).
    pub broker: tidemark_jobs::broker::LocalBroker,
    /// Connection to it.
    pub conn: tidemark_sources::KafkaConn,
    /// The local profile.
    pub profile: Profile,
    /// Temporary directory holding the broker's state and log.
    pub dir: tempfile::TempDir,
}

impl KafkaFixture {
    /// Starts the broker and creates the topics. Fails the test (never skips) when tansu is
    /// not installed: run scripts/install-tansu.sh.
    pub fn start() -> KafkaFixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let broker = tidemark_jobs::broker::LocalBroker::start(
            0,
            tidemark_jobs::broker::Storage::Sqlite(dir.path().join("state")),
            &dir.path().join("broker.log"),
        )
        .unwrap_or_else(|e| panic!("cannot start the local broker: {e:#}"));
        let profile = tidemark_jobs::config::load("local").expect("local profile");
        let conn = profile.kafka_conn(Some(&broker.addr()));
        tidemark_jobs::broker::ensure_topics(&conn, &profile).expect("create topics");
        KafkaFixture {
            broker,
            conn,
            profile,
            dir,
        }
    }

    /// Produces the world `cfg` (unpaced) into the ingress topic.
    pub fn produce(&self, cfg: &WorldConfig) {
        tidemark_jobs::kafka::produce_world(&self.conn, cfg, false, None, &mut |_, _| {})
            .expect("produce world");
    }

    /// The ingress topic from the beginning up to `end`.
    pub fn ingress(&self, end: tidemark_sources::KafkaEnd) -> Ingress {
        Ingress::Kafka {
            conn: self.conn.clone(),
            topic: tidemark_jobs::broker::topics::INGRESS.to_owned(),
            start: tidemark_sources::KafkaStart::Beginning,
            end,
        }
    }

    /// A bounded run over everything in the ingress topic now, `workers` threads, publishing
    /// to the output topics when `publish`.
    pub fn run(&self, data: &Path, workers: usize, publish: bool) -> RunOutcome {
        let opts = tidemark_jobs::run::RunOptions {
            publish: publish.then(|| self.conn.clone()),
            ..tidemark_jobs::run::RunOptions::threads(workers)
        };
        tidemark_jobs::run::run_with(
            &self.profile,
            &self.ingress(tidemark_sources::KafkaEnd::Latest),
            data,
            &opts,
        )
        .expect("run over kafka")
        .expect("single process returns an outcome")
    }
}

/// The primary-truth trees a run writes (everything but `runs/`).
pub const TRUTH_TREES: [&str; 4] = ["archive", "ig", "dla", "ofp"];

/// Asserts that two data roots hold byte-identical primary truths.
pub fn assert_same_truths(a: &Path, b: &Path, what: &str) {
    for sub in TRUTH_TREES {
        let (x, y) = (read_tree(a, sub), read_tree(b, sub));
        assert!(!x.is_empty() || sub == "ofp", "{what}: {sub} is empty");
        let (xk, yk): (Vec<_>, Vec<_>) = (x.keys().collect(), y.keys().collect());
        assert_eq!(xk, yk, "{what}: {sub} file lists differ");
        for ((pa, ba), bb) in x.iter().zip(y.values()) {
            assert!(ba == bb, "{what}: {pa} differs");
        }
    }
}

/// Runs `tests/python/kafka_client.py ARGS` (kafka-python, a third-party client) and returns
/// the JSON it prints; fails the test if it fails.
pub fn kafka_client(args: &[&str]) -> serde_json::Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/kafka_client.py");
    let out = std::process::Command::new("python3")
        .arg(script)
        .args(args)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "kafka_client.py {args:?} failed (is kafka-python installed? scripts/test.sh installs it): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("kafka_client.py prints JSON")
}
