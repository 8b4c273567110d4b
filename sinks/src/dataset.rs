//! Training-dataset files (docs/datasets.md): typed Parquet columns of [`DatasetRow`]s, their
//! decoder, and the canonical row encoding behind the layout-independent dataset hash.
//!
//! The columns depend on the feature revision (one per entity key field and per feature), so a
//! [`DatasetLayout`] names them; everything else is fixed.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, Float64Array, Int64Array, ListArray, ListBuilder, RecordBatch, StringArray,
    StringBuilder, TimestampMillisecondArray, UInt64Array,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value as Json};
use sha2::{Digest, Sha256};

use tidemark_operators::dataset::{DatasetRow, KnownLabel, LabelValue, Split};
use tidemark_operators::decision::{DecisionDetail, UnknownName};

use crate::error::SinkError;
use crate::parquet::{col, record_batches, Columns};

/// The columns of a dataset: the parts that depend on the feature revision and options.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetLayout {
    /// Entity key fields the features use, in order of first appearance.
    pub key_fields: Vec<String>,
    /// Every feature of the revision, in definition order.
    pub features: Vec<String>,
    /// Whether the dataset has a `split` column.
    pub split: bool,
}

const HEAD: [&str; 4] = ["event_id", "decision_id", "logical_time", "ts_utc"];
const GRAPH: [&str; 2] = ["cluster_size", "cluster_cards"];
const TAIL: [&str; 9] = [
    "score",
    "decision",
    "posture",
    "degrade_mask",
    "label",
    "label_effective_ts",
    "label_observed_ts",
    "label_assertion_id",
    "split",
];

fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

fn mask_item() -> Field {
    Field::new("item", DataType::Utf8, true)
}

impl DatasetLayout {
    /// Every column name in order.
    pub fn column_names(&self) -> Vec<String> {
        let mut out: Vec<String> = HEAD.iter().map(|s| (*s).to_owned()).collect();
        out.extend(self.key_fields.iter().cloned());
        out.extend(self.features.iter().cloned());
        out.extend(GRAPH.iter().map(|s| (*s).to_owned()));
        let tail = if self.split {
            TAIL.len()
        } else {
            TAIL.len() - 1
        };
        out.extend(TAIL[..tail].iter().map(|s| (*s).to_owned()));
        out
    }

    /// Checks that no two columns share a name (a feature named like a fixed column).
    pub fn check(&self) -> Result<(), String> {
        let names = self.column_names();
        let mut seen = std::collections::BTreeSet::new();
        for n in &names {
            if !seen.insert(n.as_str()) {
                return Err(format!(
                    "dataset column {n:?} would appear twice (a feature or key field named like another column)"
                ));
            }
        }
        Ok(())
    }

    /// The Parquet schema.
    pub fn schema(&self) -> SchemaRef {
        let mut fields = vec![
            Field::new("event_id", DataType::Utf8, false),
            Field::new("decision_id", DataType::Utf8, false),
            Field::new("logical_time", DataType::UInt64, false),
            Field::new("ts_utc", ts_type(), false),
        ];
        fields.extend(
            self.key_fields
                .iter()
                .map(|k| Field::new(k, DataType::Utf8, true)),
        );
        fields.extend(
            self.features
                .iter()
                .chain(
                    GRAPH
                        .iter()
                        .map(|g| (*g).to_owned())
                        .collect::<Vec<_>>()
                        .iter(),
                )
                .map(|f| Field::new(f, DataType::Int64, true)),
        );
        fields.extend([
            Field::new("score", DataType::Float64, false),
            Field::new("decision", DataType::Utf8, false),
            Field::new("posture", DataType::Utf8, false),
            Field::new_list("degrade_mask", mask_item(), false),
            Field::new("label", DataType::Utf8, true),
            Field::new("label_effective_ts", ts_type(), true),
            Field::new("label_observed_ts", ts_type(), true),
            Field::new("label_assertion_id", DataType::Utf8, true),
        ]);
        if self.split {
            fields.push(Field::new("split", DataType::Utf8, false));
        }
        Arc::new(Schema::new(fields))
    }

    /// The column builder for [`crate::writers::write_closed`].
    pub fn columns(&self) -> Columns<DatasetRow> {
        let layout = self.clone();
        std::sync::Arc::new(move |rows: &[DatasetRow]| layout.build_columns(rows))
    }

    fn build_columns(&self, rows: &[DatasetRow]) -> Vec<ArrayRef> {
        let ts = |v: Vec<Option<i64>>| -> ArrayRef {
            Arc::new(TimestampMillisecondArray::from(v).with_timezone("UTC"))
        };
        let ms = |x: u64| i64::try_from(x).unwrap_or(i64::MAX);
        let mut cols: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| r.detail.event_id.as_str()),
            )),
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| r.detail.decision_id.as_str()),
            )),
            Arc::new(UInt64Array::from_iter_values(
                rows.iter().map(|r| r.detail.logical_time),
            )),
            ts(rows.iter().map(|r| Some(ms(r.detail.ts_ms))).collect()),
        ];
        for k in 0..self.key_fields.len() {
            cols.push(Arc::new(StringArray::from_iter(
                rows.iter()
                    .map(|r| r.detail.keys.get(k).and_then(|v| v.as_deref())),
            )));
        }
        for f in 0..self.features.len() {
            cols.push(Arc::new(Int64Array::from_iter(
                rows.iter()
                    .map(|r| r.detail.features.get(f).copied().flatten()),
            )));
        }
        cols.push(Arc::new(Int64Array::from_iter(
            rows.iter().map(|r| r.detail.cluster_size),
        )));
        cols.push(Arc::new(Int64Array::from_iter(
            rows.iter().map(|r| r.detail.cluster_cards),
        )));
        cols.push(Arc::new(Float64Array::from_iter_values(
            rows.iter().map(|r| r.detail.score),
        )));
        cols.push(Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.detail.decision.as_str()),
        )));
        cols.push(Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.detail.posture.as_str()),
        )));
        let mut mask = ListBuilder::new(StringBuilder::new()).with_field(Arc::new(mask_item()));
        for r in rows {
            for m in &r.detail.degrade_mask {
                mask.values().append_value(m);
            }
            mask.append(true);
        }
        cols.push(Arc::new(mask.finish()));
        cols.push(Arc::new(StringArray::from_iter(
            rows.iter()
                .map(|r| r.label.as_ref().map(|l| l.label.as_str())),
        )));
        cols.push(ts(rows
            .iter()
            .map(|r| r.label.as_ref().map(|l| ms(l.effective_ms)))
            .collect()));
        cols.push(ts(rows
            .iter()
            .map(|r| r.label.as_ref().map(|l| ms(l.observed_ms)))
            .collect()));
        cols.push(Arc::new(StringArray::from_iter(
            rows.iter()
                .map(|r| r.label.as_ref().map(|l| l.assertion_id.as_str())),
        )));
        if self.split {
            cols.push(Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| r.split.map_or("", Split::as_str)),
            )));
        }
        cols
    }

    /// Decodes a dataset file lazily, one row group at a time.
    pub fn decode(
        &self,
        bytes: Bytes,
        path: &str,
    ) -> Result<impl Iterator<Item = Result<Vec<DatasetRow>, SinkError>> + 'static, SinkError> {
        let (layout, path_owned) = (self.clone(), path.to_owned());
        Ok(record_batches(bytes, path)?.map(move |b| layout.decode_batch(&b?, &path_owned)))
    }

    fn decode_batch(&self, b: &RecordBatch, path: &str) -> Result<Vec<DatasetRow>, SinkError> {
        let expected = self.schema();
        if b.schema().fields() != expected.fields() {
            return Err(SinkError::Corrupt {
                path: path.to_owned(),
                message: "columns differ from the manifest's layout".into(),
            });
        }
        let s = |n: &str| col::<StringArray>(b, n, path);
        let i = |n: &str| col::<Int64Array>(b, n, path);
        let t = |n: &str| col::<TimestampMillisecondArray>(b, n, path);
        let opt_s = |a: &StringArray, r: usize| (!a.is_null(r)).then(|| a.value(r).to_owned());
        let opt_i = |a: &Int64Array, r: usize| (!a.is_null(r)).then(|| a.value(r));
        let (ev, dec_id, lt, ts) = (
            s("event_id")?,
            s("decision_id")?,
            col::<UInt64Array>(b, "logical_time", path)?,
            t("ts_utc")?,
        );
        let keys = self
            .key_fields
            .iter()
            .map(|k| s(k))
            .collect::<Result<Vec<_>, _>>()?;
        let feats = self
            .features
            .iter()
            .map(|f| i(f))
            .collect::<Result<Vec<_>, _>>()?;
        let (cs, cc) = (i("cluster_size")?, i("cluster_cards")?);
        let score = col::<Float64Array>(b, "score", path)?;
        let (decision, posture) = (s("decision")?, s("posture")?);
        let mask = col::<ListArray>(b, "degrade_mask", path)?;
        let (label, le, lo, la) = (
            s("label")?,
            t("label_effective_ts")?,
            t("label_observed_ts")?,
            s("label_assertion_id")?,
        );
        let split = if self.split { Some(s("split")?) } else { None };
        let corrupt = |m: String| SinkError::Corrupt {
            path: path.to_owned(),
            message: m,
        };
        let ms = |x: i64| u64::try_from(x).unwrap_or(0);
        let mut out = Vec::with_capacity(b.num_rows());
        for r in 0..b.num_rows() {
            let masked = mask.value(r);
            let masked = masked
                .as_any()
                .downcast_ref::<StringArray>()
                .ok_or_else(|| corrupt("degrade_mask is not a list of strings".into()))?;
            let known = match opt_s(label, r) {
                None => None,
                Some(l) => Some(KnownLabel {
                    label: LabelValue::parse(&l).ok_or_else(|| {
                        corrupt(format!("label {l:?} is neither fraud nor legit"))
                    })?,
                    effective_ms: ms(le.value(r)),
                    observed_ms: ms(lo.value(r)),
                    assertion_id: la.value(r).to_owned(),
                }),
            };
            let split = match split {
                None => None,
                Some(a) => Some(match a.value(r) {
                    "train" => Split::Train,
                    "test" => Split::Test,
                    x => return Err(corrupt(format!("split {x:?} is neither train nor test"))),
                }),
            };
            out.push(DatasetRow {
                detail: DecisionDetail {
                    logical_time: lt.value(r),
                    event_id: ev.value(r).to_owned(),
                    decision_id: dec_id.value(r).to_owned(),
                    ts_ms: ms(ts.value(r)),
                    keys: keys.iter().map(|a| opt_s(a, r)).collect(),
                    features: feats.iter().map(|a| opt_i(a, r)).collect(),
                    cluster_size: opt_i(cs, r),
                    cluster_cards: opt_i(cc, r),
                    score: score.value(r),
                    decision: decision
                        .value(r)
                        .parse()
                        .map_err(|e: UnknownName| corrupt(e.to_string()))?,
                    posture: posture
                        .value(r)
                        .parse()
                        .map_err(|e: UnknownName| corrupt(e.to_string()))?,
                    degrade_mask: (0..masked.len())
                        .map(|j| masked.value(j).to_owned())
                        .collect(),
                },
                label: known,
                split,
            });
        }
        Ok(out)
    }

    /// The canonical encoding of one row (docs/datasets.md): a compact JSON array of the
    /// column values in column order; timestamps as epoch milliseconds, the score as the 16
    /// lower-case hex digits of its IEEE-754 bits, the degrade mask as an array.
    pub fn canonical_row(&self, r: &DatasetRow) -> Vec<u8> {
        let d = &r.detail;
        let mut v: Vec<Json> = vec![
            json!(d.event_id),
            json!(d.decision_id),
            json!(d.logical_time),
            json!(d.ts_ms),
        ];
        v.extend((0..self.key_fields.len()).map(|k| json!(d.keys.get(k).cloned().flatten())));
        v.extend((0..self.features.len()).map(|f| json!(d.features.get(f).copied().flatten())));
        v.push(json!(d.cluster_size));
        v.push(json!(d.cluster_cards));
        v.push(json!(format!("{:016x}", d.score.to_bits())));
        v.push(json!(d.decision));
        v.push(json!(d.posture));
        v.push(json!(d.degrade_mask));
        let l = r.label.as_ref();
        v.push(json!(l.map(|l| l.label.as_str())));
        v.push(json!(l.map(|l| l.effective_ms)));
        v.push(json!(l.map(|l| l.observed_ms)));
        v.push(json!(l.map(|l| l.assertion_id.as_str())));
        if self.split {
            v.push(json!(r.split.map(Split::as_str)));
        }
        serde_json::to_vec(&v).unwrap_or_default()
    }
}

/// The dataset hash, fed rows in `(logical_time, event_id)` order: sha256 over the compact
/// JSON array of column names and then each row's canonical encoding, each followed by `\n`.
pub struct DatasetHasher {
    layout: DatasetLayout,
    sha: Sha256,
    rows: u64,
    last: Option<(u64, String)>,
}

impl DatasetHasher {
    /// Starts with the header line.
    pub fn new(layout: &DatasetLayout) -> Self {
        let mut sha = Sha256::new();
        sha.update(serde_json::to_vec(&layout.column_names()).unwrap_or_default());
        sha.update(b"\n");
        DatasetHasher {
            layout: layout.clone(),
            sha,
            rows: 0,
            last: None,
        }
    }

    /// Adds the next row; an error if rows arrive out of order or twice.
    pub fn add(&mut self, r: &DatasetRow) -> Result<(), String> {
        let key = (r.detail.logical_time, r.detail.event_id.clone());
        if self.last.as_ref().is_some_and(|l| *l >= key) {
            return Err(format!(
                "row ({}, {}) is not after the previous row: rows must be unique and sorted",
                key.0, key.1
            ));
        }
        self.sha.update(self.layout.canonical_row(r));
        self.sha.update(b"\n");
        self.rows += 1;
        self.last = Some(key);
        Ok(())
    }

    /// Rows hashed and the hash (lower-case hex).
    pub fn finish(self) -> (u64, String) {
        (self.rows, hex::encode(self.sha.finalize()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parquet::StreamingParquet;
    use tidemark_operators::decision::{Decision, Posture};

    fn row(t: u64, id: &str, label: Option<LabelValue>) -> DatasetRow {
        DatasetRow {
            detail: DecisionDetail {
                logical_time: t,
                event_id: id.into(),
                decision_id: format!("d-{id}"),
                ts_ms: t,
                keys: vec![Some("card-1".into()), None],
                features: vec![Some(3), None, Some(-7)],
                cluster_size: Some(2),
                cluster_cards: None,
                score: 0.125 + t as f64 * 1e-9,
                decision: Decision::Allow,
                posture: Posture::Degraded,
                degrade_mask: vec!["cluster_size".into(), "cluster_cards".into()],
            },
            label: label.map(|label| KnownLabel {
                label,
                effective_ms: t,
                observed_ms: t + 5,
                assertion_id: format!("l-{id}"),
            }),
            split: Some(Split::of(t, 15)),
        }
    }

    #[test]
    fn rows_round_trip_through_parquet_and_hash_ignores_chunking() {
        let layout = DatasetLayout {
            key_fields: vec!["card_id".into(), "email".into()],
            features: vec!["a".into(), "b".into(), "c".into()],
            split: true,
        };
        layout.check().expect("unique columns");
        let rows: Vec<DatasetRow> = (0..20_000u64)
            .map(|i| {
                let l = [None, Some(LabelValue::Fraud), Some(LabelValue::Legit)][(i % 3) as usize];
                row(i, &format!("e{i:05}"), l)
            })
            .collect();
        let mut file =
            StreamingParquet::new(layout.schema(), layout.columns(), "x").expect("starts");
        file.push(rows.iter().cloned()).expect("encodes");
        let bytes = Bytes::from(file.finish().expect("finishes"));
        let mut back = Vec::new();
        for b in layout.decode(bytes, "x").expect("opens") {
            back.extend(b.expect("decodes"));
        }
        assert_eq!(back.len(), rows.len());
        let mut h1 = DatasetHasher::new(&layout);
        let mut h2 = DatasetHasher::new(&layout);
        for (a, b) in rows.iter().zip(&back) {
            assert_eq!(a.detail, b.detail);
            assert_eq!(a.label, b.label);
            assert_eq!(a.split, b.split);
            h1.add(a).expect("sorted");
            h2.add(b).expect("sorted");
        }
        assert_eq!(h1.finish(), h2.finish());
        // Out of order is refused.
        let mut h = DatasetHasher::new(&layout);
        h.add(&rows[1]).expect("first");
        assert!(h.add(&rows[0]).is_err());
        // A different layout (column names) hashes differently.
        let other = DatasetLayout {
            features: vec!["a".into(), "b".into(), "z".into()],
            ..layout.clone()
        };
        let (mut x, mut y) = (DatasetHasher::new(&layout), DatasetHasher::new(&other));
        x.add(&rows[0]).expect("row");
        y.add(&rows[0]).expect("row");
        assert_ne!(x.finish(), y.finish());
        let clash = DatasetLayout {
            features: vec!["score".into()],
            ..layout
        };
        assert!(clash.check().is_err());
    }
}
