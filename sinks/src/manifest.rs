//! The archive manifest (SPEC §10, docs/archive-format.md).

use serde::{Deserialize, Serialize};

use tidemark_operators::hashing::sha256_hex;
use tidemark_operators::PartitionBasis;

/// Manifest format identifier.
pub const MANIFEST_FORMAT: &str = "tidemark.archive.manifest/v1";

/// What a file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    /// Admitted envelopes under `archive/`.
    Archive,
    /// Receipts under `ig/receipts/`.
    Receipts,
    /// Quarantined records with raw bytes under `ig/quarantine/`.
    Quarantine,
    /// Audit records under `dla/audit/`.
    Audit,
    /// Dataset rows under `ofs/datasets/` or `ofs/backfills/`.
    Dataset,
}

/// Receipt counts by status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptCounts {
    /// ADMITTED.
    pub admitted: u64,
    /// QUARANTINED.
    pub quarantined: u64,
    /// DUPLICATE.
    pub duplicate: u64,
}

impl ReceiptCounts {
    /// Sum of all statuses (= ingress records covered).
    pub fn total(&self) -> u64 {
        self.admitted + self.quarantined + self.duplicate
    }
    /// Adds another count.
    pub fn add(&mut self, other: &ReceiptCounts) {
        self.admitted += other.admitted;
        self.quarantined += other.quarantined;
        self.duplicate += other.duplicate;
    }
}

/// One file listed in a manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Object path relative to the data root.
    pub path: String,
    /// What the file holds.
    pub kind: FileKind,
    /// sha256 of the file bytes, lower-case hex.
    pub sha256: String,
    /// Size in bytes.
    pub bytes: u64,
    /// Rows in the file.
    pub rows: u64,
    /// Smallest logical time of a row (archive files).
    pub min_logical_time: Option<u64>,
    /// Largest logical time of a row (archive files).
    pub max_logical_time: Option<u64>,
    /// Ingress partition (receipt and quarantine files).
    pub partition: Option<u32>,
    /// First offset of the chunk (receipt and quarantine files).
    pub first_offset: Option<u64>,
    /// Last offset of the chunk, inclusive (receipt and quarantine files).
    pub last_offset: Option<u64>,
    /// Receipt counts (receipt files).
    pub counts: Option<ReceiptCounts>,
}

/// The archive manifest: what a run wrote and the ingress basis it covers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// [`MANIFEST_FORMAT`].
    pub format: String,
    /// Identifier of the basis: first 16 hex digits of sha256 of the basis' canonical JSON.
    pub basis_id: String,
    /// Policy revision the run used.
    pub policy_rev: String,
    /// Archive interval length in ms.
    pub archive_interval_ms: u64,
    /// Number of archive buckets.
    pub buckets: u32,
    /// Receipts per receipt file.
    pub receipts_chunk: u64,
    /// Ingress offset ranges per partition, sorted by partition.
    pub basis: Vec<PartitionBasis>,
    /// Receipt totals.
    pub totals: ReceiptCounts,
    /// Every file written, sorted by path.
    pub files: Vec<FileEntry>,
}

/// The id of a basis: first 16 hex digits of sha256 over its canonical JSON (sorted by partition).
pub fn basis_id(basis: &[PartitionBasis]) -> String {
    let mut sorted = basis.to_vec();
    sorted.sort();
    let json = serde_json::to_vec(&sorted).unwrap_or_default();
    sha256_hex(&json)[..16].to_owned()
}

impl Manifest {
    /// Canonical bytes: pretty JSON with a trailing newline (struct field order is fixed).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).unwrap_or_default();
        v.push(b'\n');
        v
    }
}
