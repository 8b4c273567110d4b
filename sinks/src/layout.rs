//! Object paths of primary truths. Names depend only on content coordinates (logical time,
//! bucket, partition, offsets), never on wall clock, worker count or run id.

/// `archive/t=<interval start ms, 16 digits>/bucket=<bucket, 3 digits>.parquet`
pub fn archive_file(interval_start: u64, bucket: u32) -> String {
    format!("archive/t={interval_start:016}/bucket={bucket:03}.parquet")
}

/// `ig/receipts/partition=<p, 5 digits>/offsets=<first>-<last>.parquet` (inclusive offsets,
/// 12 digits each).
pub fn receipts_file(partition: u32, first: u64, last: u64) -> String {
    format!("ig/receipts/partition={partition:05}/offsets={first:012}-{last:012}.parquet")
}

/// `ig/quarantine/partition=<p>/offsets=<first>-<last>.parquet`, the same chunk as the receipts.
pub fn quarantine_file(partition: u32, first: u64, last: u64) -> String {
    format!("ig/quarantine/partition={partition:05}/offsets={first:012}-{last:012}.parquet")
}

/// `archive/manifests/basis=<basis id>.json`.
pub fn manifest_file(basis_id: &str) -> String {
    format!("archive/manifests/basis={basis_id}.json")
}

/// The prefix holding manifests.
pub const MANIFEST_PREFIX: &str = "archive/manifests";

/// The prefix holding commit records (not primary truths: the run's own progress).
pub const COMMIT_PREFIX: &str = "ckpt/commits";

/// The prefix holding the idle journal (wall-clock decisions, re-read on restart).
pub const IDLE_PREFIX: &str = "ckpt/idle";
