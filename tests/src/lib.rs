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
