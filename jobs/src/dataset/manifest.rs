//! The DatasetManifest (docs/datasets.md): what determines a dataset's rows (and so its id),
//! its files, the layout-independent dataset hash, statistics and the zero-skew certificate.

use serde::{Deserialize, Serialize};

use tidemark_operators::dataset::{DatasetRow, LabelValue, Split};
use tidemark_operators::hashing::sha256_hex;
use tidemark_sinks::dataset::DatasetLayout;

/// Manifest format identifier.
pub const DATASET_FORMAT: &str = "tidemark.dataset/v1";

/// Fixed buckets of a dataset (`xxh3_64(event_id) % 4`), independent of worker count.
pub const DATASET_BUCKETS: u32 = 4;

/// One archive manifest a dataset reads.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasisRef {
    /// The archive manifest's basis id.
    pub basis_id: String,
    /// sha256 of the archive manifest's bytes (it lists every archive file's sha256).
    pub manifest_sha256: String,
}

/// Everything that determines a dataset's rows. `dataset_id` is the first 16 hex digits of
/// the sha256 of its compact JSON (fields in this order).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetInputs {
    /// [`DATASET_FORMAT`] (a new row semantics gets a new format, hence new ids).
    pub format: String,
    /// The archive basis, sorted by basis id.
    pub basis: Vec<BasisRef>,
    /// Feature revision (`features@<rev>:<digest[..12]>`).
    pub feature_rev: String,
    /// Full sha256 of the feature revision's canonical JSON (`[ofp, features]`).
    pub feature_digest: String,
    /// sha256 of the bundle file.
    pub bundle_digest: String,
    /// The decision policy revision (IG, archive, features, graph, DF, DLA, bundle).
    pub policy_rev: String,
    /// First logical time (ms, inclusive).
    pub from: u64,
    /// End logical time (ms, exclusive).
    pub to: u64,
    /// Labels as known at this time (epoch ms, inclusive).
    pub labels_as_of: u64,
    /// Time split point, when the dataset has a `split` column.
    pub split_at: Option<u64>,
}

impl DatasetInputs {
    /// The dataset id.
    pub fn id(&self) -> String {
        sha256_hex(&serde_json::to_vec(self).unwrap_or_default())[..16].to_owned()
    }
}

/// One dataset file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetFile {
    /// Object path relative to the dataset's root.
    pub path: String,
    /// sha256 of the bytes (lower-case hex).
    pub sha256: String,
    /// Size in bytes.
    pub bytes: u64,
    /// Rows in the file.
    pub rows: u64,
}

/// A column's name and Arrow type, for readers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnType {
    /// Column name.
    pub name: String,
    /// Arrow data type (its `Display` form, e.g. `Int64`).
    pub r#type: String,
    /// Whether it may be null.
    pub nullable: bool,
}

/// Label counts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelCounts {
    /// Rows labelled fraud.
    pub fraud: u64,
    /// Rows labelled legit.
    pub legit: u64,
    /// Rows with no label known at the cut-off.
    pub unknown: u64,
}

/// Statistics of one integer column.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnStats {
    /// Column name.
    pub name: String,
    /// Null values.
    pub nulls: u64,
    /// `nulls / rows` (0 for an empty dataset).
    pub null_rate: f64,
    /// Smallest value, if any.
    pub min: Option<i64>,
    /// Largest value, if any.
    pub max: Option<i64>,
}

/// Dataset statistics.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetStats {
    /// Rows.
    pub rows: u64,
    /// Label counts.
    pub labels: LabelCounts,
    /// Rows per split (`[train, test]`), when the dataset has a split.
    pub split: Option<[u64; 2]>,
    /// Per feature column (every feature, then cluster_size, cluster_cards).
    pub features: Vec<ColumnStats>,
}

impl DatasetStats {
    /// Empty statistics for a layout.
    pub fn new(layout: &DatasetLayout) -> Self {
        let names = layout
            .features
            .iter()
            .cloned()
            .chain(["cluster_size".to_owned(), "cluster_cards".to_owned()]);
        DatasetStats {
            rows: 0,
            labels: LabelCounts::default(),
            split: layout.split.then_some([0, 0]),
            features: names
                .map(|name| ColumnStats {
                    name,
                    nulls: 0,
                    null_rate: 0.0,
                    min: None,
                    max: None,
                })
                .collect(),
        }
    }

    /// Counts one row.
    pub fn add(&mut self, r: &DatasetRow) {
        self.rows += 1;
        match r.label.as_ref().map(|l| l.label) {
            Some(LabelValue::Fraud) => self.labels.fraud += 1,
            Some(LabelValue::Legit) => self.labels.legit += 1,
            None => self.labels.unknown += 1,
        }
        if let (Some(s), Some(split)) = (self.split.as_mut(), r.split) {
            s[usize::from(split == Split::Test)] += 1;
        }
        let d = &r.detail;
        let values = d
            .features
            .iter()
            .copied()
            .chain([d.cluster_size, d.cluster_cards]);
        for (c, v) in self.features.iter_mut().zip(values) {
            match v {
                None => c.nulls += 1,
                Some(x) => {
                    c.min = Some(c.min.map_or(x, |m| m.min(x)));
                    c.max = Some(c.max.map_or(x, |m| m.max(x)));
                }
            }
        }
    }

    /// Fills the null rates.
    pub fn finish(&mut self) {
        for c in &mut self.features {
            c.null_rate = if self.rows == 0 {
                0.0
            } else {
                c.nulls as f64 / self.rows as f64
            };
        }
    }
}

/// The zero-skew certificate: every row checked against the online audit record of the same
/// decision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Certificate {
    /// Audit records of the online run in `[from, to)`.
    pub audit_rows: u64,
    /// Dataset rows compared (all of them).
    pub rows: u64,
    /// Rows that differ (or exist on one side only).
    pub mismatches: u64,
    /// The first difference.
    pub first_difference: Option<String>,
    /// The online run's decision policy revision (from its audit records), if any.
    pub online_policy_rev: Option<String>,
    /// Whether the dataset's feature revision is the one the online run used. Only then do
    /// `mismatches = 0` certify zero training/serving skew; otherwise the features present in
    /// both (by name), score and decision were compared.
    pub same_feature_revision: bool,
}

impl Certificate {
    /// Counts one mismatch, keeping the first difference.
    pub fn mismatch(&mut self, what: String) {
        self.mismatches += 1;
        if self.first_difference.is_none() {
            self.first_difference = Some(what);
        }
    }

    /// `rows=N mismatches=M` (and the scope).
    pub fn summary(&self) -> String {
        format!("rows={} mismatches={}", self.rows, self.mismatches)
    }
}

/// The manifest beside a dataset's files (`manifest.json`, pretty JSON, trailing newline).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetManifest {
    /// [`DATASET_FORMAT`].
    pub format: String,
    /// `inputs.id()`.
    pub dataset_id: String,
    /// What determines the rows.
    pub inputs: DatasetInputs,
    /// The variable columns.
    pub layout: DatasetLayout,
    /// Every column with its type.
    pub columns: Vec<ColumnType>,
    /// Fixed buckets.
    pub buckets: u32,
    /// Rows per row group (the last one of a file shorter).
    pub row_group_rows: usize,
    /// Files sorted by path (only non-empty buckets have one).
    pub files: Vec<DatasetFile>,
    /// Rows.
    pub rows: u64,
    /// The dataset hash (docs/datasets.md), independent of file layout.
    pub dataset_hash: String,
    /// Statistics.
    pub stats: DatasetStats,
    /// The zero-skew check against the online audit, or `None` when the data root holds no
    /// audit records for the range.
    pub certificate: Option<Certificate>,
}

impl DatasetManifest {
    /// Canonical bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).unwrap_or_default();
        v.push(b'\n');
        v
    }
}
