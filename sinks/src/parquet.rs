//! Canonical Parquet encodings (docs/archive-format.md).
//!
//! Files are written with fixed writer properties: Snappy compression, row groups of exactly
//! [`ROW_GROUP_ROWS`] rows (the last one shorter), `created_by = "tidemark"`. Rows arrive
//! sorted, so identical row sets always give identical bytes, whatever the batch boundaries,
//! worker count or run.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BinaryArray, BooleanArray, RecordBatch, StringArray, UInt32Array, UInt64Array,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use bytes::Bytes;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use tidemark_operators::ingest::{Admitted, EventType, Receipt, ReceiptStatus};
use tidemark_operators::{ReasonCode, SourceCoord};

use crate::error::SinkError;

/// Rows per Parquet row group.
pub const ROW_GROUP_ROWS: usize = 8192;

/// Columns whose values are (nearly) unique per row: a dictionary would hold every value
/// once more and cost a hash and compare per value, only to fall back to plain encoding; their
/// min/max statistics (long strings compared byte by byte, a third of the encoder's memcmp)
/// serve no reader, which prunes on `logical_time`. Both are off for these columns, in every
/// file kind that has them (docs/archive-format.md).
const UNIQUE_COLUMNS: [&str; 9] = [
    "event_id",
    "envelope",
    "decision_id",
    "trace_id",
    "feature_snapshot_hash",
    "features",
    "ts_utc",
    "raw",
    "detail",
];

fn props() -> WriterProperties {
    let mut b = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_created_by("tidemark".to_owned());
    for c in UNIQUE_COLUMNS {
        let path = ColumnPath::from(c);
        b = b
            .set_column_dictionary_enabled(path.clone(), false)
            .set_column_statistics_enabled(path, EnabledStatistics::None);
    }
    b.build()
}

/// Encodes columns with the canonical writer properties.
pub fn encode_columns(
    schema: SchemaRef,
    columns: Vec<ArrayRef>,
    path: &str,
) -> Result<Vec<u8>, SinkError> {
    let bug = |e: &dyn std::fmt::Display| SinkError::Bug(format!("encoding {path}: {e}"));
    let batch = RecordBatch::try_new(schema.clone(), columns).map_err(|e| bug(&e))?;
    let mut out = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut out, schema, Some(props())).map_err(|e| bug(&e))?;
    writer.write(&batch).map_err(|e| bug(&e))?;
    writer.close().map_err(|e| bug(&e))?;
    Ok(out)
}

/// A Parquet file encoded incrementally from rows pushed in sorted order, byte-identical to
/// [`encode_columns`] over all of them at once: rows are handed to the writer in batches of
/// exactly one row group ([`ROW_GROUP_ROWS`]), which is how the writer slices one large batch
/// too. At most one row group of rows is held, plus the encoded bytes so far.
pub struct StreamingParquet<R> {
    writer: ArrowWriter<Vec<u8>>,
    schema: SchemaRef,
    columns: Columns<R>,
    buf: Vec<R>,
    path: String,
    /// Where encoded row groups go to be dropped (see [`BackgroundParquet`]); `None` drops
    /// them here.
    spent: Option<std::sync::mpsc::Sender<Vec<R>>>,
}

/// Builds the columns of a non-empty run of sorted rows (shared by every file of a format, and
/// by the encoder threads of [`BackgroundParquet`]).
pub type Columns<R> = std::sync::Arc<dyn Fn(&[R]) -> Vec<ArrayRef> + Send + Sync>;

impl<R> StreamingParquet<R> {
    /// Starts a file at `path` (used in error messages) with `schema`, whose columns
    /// `columns` builds from rows.
    pub fn new(schema: SchemaRef, columns: Columns<R>, path: &str) -> Result<Self, SinkError> {
        let writer = ArrowWriter::try_new(Vec::new(), schema.clone(), Some(props()))
            .map_err(|e| SinkError::Bug(format!("encoding {path}: {e}")))?;
        Ok(StreamingParquet {
            writer,
            schema,
            columns,
            buf: Vec::with_capacity(ROW_GROUP_ROWS),
            path: path.to_owned(),
            spent: None,
        })
    }

    fn write_buf(&mut self) -> Result<(), SinkError> {
        let bug =
            |e: &dyn std::fmt::Display| SinkError::Bug(format!("encoding {}: {e}", self.path));
        let batch = RecordBatch::try_new(self.schema.clone(), (self.columns)(&self.buf))
            .map_err(|e| bug(&e))?;
        self.writer.write(&batch).map_err(|e| bug(&e))?;
        match &self.spent {
            Some(tx) => {
                let rows = std::mem::replace(&mut self.buf, Vec::with_capacity(ROW_GROUP_ROWS));
                // A pusher that went away has nothing left to free: drop them here.
                let _ = tx.send(rows);
            }
            None => self.buf.clear(),
        }
        Ok(())
    }

    /// Appends rows (sorted, after every row pushed before).
    pub fn push(&mut self, rows: impl IntoIterator<Item = R>) -> Result<(), SinkError> {
        for r in rows {
            self.buf.push(r);
            if self.buf.len() == ROW_GROUP_ROWS {
                self.write_buf()?;
            }
        }
        Ok(())
    }

    /// Writes the last row group and the footer; returns the file's bytes.
    pub fn finish(mut self) -> Result<Vec<u8>, SinkError> {
        if !self.buf.is_empty() {
            self.write_buf()?;
        }
        let path = self.path.clone();
        self.writer
            .into_inner()
            .map_err(|e| SinkError::Bug(format!("encoding {path}: {e}")))
    }
}

/// A [`StreamingParquet`] on a thread of its own: pushes hand rows over (a bounded queue, so a
/// slow encoder holds the pusher back rather than piling rows up) and return at once, so a
/// row group is encoded off the timely worker that produced it (encoding one on the worker
/// held decisions back 40–80 ms). The bytes are those of [`StreamingParquet`]: the same
/// sequential encoder, only elsewhere. An encoding error surfaces at the next push or at
/// [`BackgroundParquet::finish`].
///
/// Encoded rows travel back and are dropped by the pushing thread at its next push (or at
/// finish): their strings were allocated there, and freeing them there is a thread-local free
/// instead of a cross-thread one (which cost ~7% of a replay's CPU in the allocator).
pub struct BackgroundParquet<R> {
    tx: Option<std::sync::mpsc::SyncSender<Vec<R>>>,
    spent: std::sync::mpsc::Receiver<Vec<R>>,
    encoder: Option<std::thread::JoinHandle<Result<Vec<u8>, SinkError>>>,
    path: String,
}

impl<R: Send + 'static> BackgroundParquet<R> {
    /// Starts the encoder of a file at `path` (see [`StreamingParquet::new`]).
    pub fn new(schema: SchemaRef, columns: Columns<R>, path: &str) -> Result<Self, SinkError> {
        let mut parquet = StreamingParquet::new(schema, columns, path)?;
        let (spent_tx, spent) = std::sync::mpsc::channel::<Vec<R>>();
        parquet.spent = Some(spent_tx);
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<R>>(4);
        let encoder = std::thread::Builder::new()
            .name("tidemark-encode".into())
            .spawn(move || {
                for rows in rx {
                    parquet.push(rows)?;
                }
                parquet.finish()
            })
            .map_err(|e| SinkError::Bug(format!("encoding {path}: no encoder thread: {e}")))?;
        Ok(BackgroundParquet {
            tx: Some(tx),
            spent,
            encoder: Some(encoder),
            path: path.to_owned(),
        })
    }

    /// Hands rows (sorted, after every row pushed before) to the encoder.
    pub fn push(&mut self, rows: Vec<R>) -> Result<(), SinkError> {
        self.drop_spent();
        if let Some(tx) = &self.tx {
            if tx.send(rows).is_ok() {
                return Ok(());
            }
        }
        // The encoder stopped: it failed, and its error says why.
        self.tx = None;
        match self.join() {
            Err(e) => Err(e),
            Ok(_) => Err(SinkError::Bug(format!(
                "encoding {}: the encoder stopped early",
                self.path
            ))),
        }
    }

    /// Waits for the encoder to write the last row group and the footer; the file's bytes.
    pub fn finish(mut self) -> Result<Vec<u8>, SinkError> {
        self.tx = None;
        let bytes = self.join();
        self.drop_spent();
        bytes
    }

    /// Drops the rows the encoder has finished with, here.
    fn drop_spent(&mut self) {
        while let Ok(rows) = self.spent.try_recv() {
            drop(rows);
        }
    }

    fn join(&mut self) -> Result<Vec<u8>, SinkError> {
        let path = &self.path;
        match self.encoder.take().map(|h| h.join()) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(SinkError::Bug(format!(
                "encoding {path}: the encoder panicked"
            ))),
            None => Err(SinkError::Bug(format!("encoding {path}: already finished"))),
        }
    }
}

/// Reads every record batch of a Parquet file.
pub fn read_batches(bytes: Bytes, path: &str) -> Result<Vec<RecordBatch>, SinkError> {
    let corrupt = |e: &dyn std::fmt::Display| SinkError::Corrupt {
        path: path.to_owned(),
        message: e.to_string(),
    };
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .map_err(|e| corrupt(&e))?
        .build()
        .map_err(|e| corrupt(&e))?;
    reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| corrupt(&e))
}

/// The number of rows recorded in a Parquet file's footer.
pub fn row_count(bytes: Bytes, path: &str) -> Result<u64, SinkError> {
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(|e| SinkError::Corrupt {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
    Ok(u64::try_from(builder.metadata().file_metadata().num_rows()).unwrap_or(0))
}

/// A column of `b` by name and type, or a `Corrupt` error naming it.
pub fn col<'a, T: 'static>(b: &'a RecordBatch, name: &str, path: &str) -> Result<&'a T, SinkError> {
    b.column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .ok_or_else(|| SinkError::Corrupt {
            path: path.to_owned(),
            message: format!("missing or mistyped column {name}"),
        })
}

fn opt_str(a: &StringArray, i: usize) -> Option<String> {
    (!a.is_null(i)).then(|| a.value(i).to_owned())
}

/// Schema of archive files.
pub fn archive_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("logical_time", DataType::UInt64, false),
        Field::new("event_id", DataType::Utf8, false),
        Field::new("source_partition", DataType::UInt32, false),
        Field::new("source_offset", DataType::UInt64, false),
        Field::new("event_type", DataType::Utf8, false),
        Field::new("partition_key", DataType::Utf8, false),
        Field::new("record_ts", DataType::UInt64, false),
        Field::new("late_clamped", DataType::Boolean, false),
        Field::new("envelope", DataType::Utf8, false),
    ]))
}

/// Encodes sorted admitted rows as an archive file.
pub fn encode_archive(rows: &[Admitted], path: &str) -> Result<Vec<u8>, SinkError> {
    encode_columns(archive_schema(), archive_columns(rows), path)
}

/// The archive columns of `rows`.
pub fn archive_columns(rows: &[Admitted]) -> Vec<ArrayRef> {
    vec![
        Arc::new(UInt64Array::from_iter_values(
            rows.iter().map(|r| r.logical_time),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.event_id.as_str()),
        )),
        Arc::new(UInt32Array::from_iter_values(
            rows.iter().map(|r| r.coord.partition),
        )),
        Arc::new(UInt64Array::from_iter_values(
            rows.iter().map(|r| r.coord.offset),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.event_type.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.partition_key.as_str()),
        )),
        Arc::new(UInt64Array::from_iter_values(
            rows.iter().map(|r| r.record_ts),
        )),
        Arc::new(BooleanArray::from_iter(
            rows.iter().map(|r| Some(r.late_clamped)),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.envelope.as_str()),
        )),
    ]
}

/// Decodes an archive file.
pub fn decode_archive(bytes: Bytes, path: &str) -> Result<Vec<Admitted>, SinkError> {
    let mut out = Vec::new();
    for batch in archive_batches(bytes, path)? {
        out.extend(batch?);
    }
    Ok(out)
}

/// Decodes an archive file lazily, one row group's worth of rows at a time (in file order,
/// which is sorted): memory holds the file's bytes and one batch of rows.
pub fn archive_batches(
    bytes: Bytes,
    path: &str,
) -> Result<impl Iterator<Item = Result<Vec<Admitted>, SinkError>>, SinkError> {
    let path_owned = path.to_owned();
    Ok(record_batches(bytes, path)?.map(move |b| decode_archive_batch(&b?, &path_owned)))
}

/// The archive rows of one event type. A Parquet row filter on the `event_type` column
/// decides first, so the other columns (the envelope above all) are decoded only for the rows
/// that match: how a dataset build finds the label assertions among all events.
pub fn archive_rows_of_type(
    bytes: Bytes,
    path: &str,
    event_type: EventType,
) -> Result<Vec<Admitted>, SinkError> {
    use arrow::array::Scalar;
    use parquet::arrow::arrow_reader::{ArrowPredicateFn, RowFilter};
    use parquet::arrow::ProjectionMask;
    let corrupt = |e: &dyn std::fmt::Display| SinkError::Corrupt {
        path: path.to_owned(),
        message: e.to_string(),
    };
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(|e| corrupt(&e))?;
    let idx = builder
        .parquet_schema()
        .columns()
        .iter()
        .position(|c| c.name() == "event_type")
        .ok_or_else(|| corrupt(&"no event_type column"))?;
    let mask = ProjectionMask::leaves(builder.parquet_schema(), [idx]);
    let want = Scalar::new(StringArray::from(vec![event_type.as_str()]));
    let predicate = ArrowPredicateFn::new(mask, move |b: RecordBatch| {
        arrow::compute::kernels::cmp::eq(b.column(0), &want)
    });
    let reader = builder
        .with_row_filter(RowFilter::new(vec![Box::new(predicate)]))
        .with_batch_size(ROW_GROUP_ROWS)
        .build()
        .map_err(|e| corrupt(&e))?;
    let mut out = Vec::new();
    for b in reader {
        out.extend(decode_archive_batch(&b.map_err(|e| corrupt(&e))?, path)?);
    }
    Ok(out)
}

/// The record batches of a Parquet file, lazily, one row group's worth at a time.
pub fn record_batches(
    bytes: Bytes,
    path: &str,
) -> Result<impl Iterator<Item = Result<RecordBatch, SinkError>>, SinkError> {
    let corrupt = |p: &str, e: &dyn std::fmt::Display| SinkError::Corrupt {
        path: p.to_owned(),
        message: e.to_string(),
    };
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .map_err(|e| corrupt(path, &e))?
        .with_batch_size(ROW_GROUP_ROWS)
        .build()
        .map_err(|e| corrupt(path, &e))?;
    let path = path.to_owned();
    Ok(reader.map(move |b| b.map_err(|e| corrupt(&path, &e))))
}

fn decode_archive_batch(b: &RecordBatch, path: &str) -> Result<Vec<Admitted>, SinkError> {
    let lt = col::<UInt64Array>(b, "logical_time", path)?;
    let id = col::<StringArray>(b, "event_id", path)?;
    let sp = col::<UInt32Array>(b, "source_partition", path)?;
    let so = col::<UInt64Array>(b, "source_offset", path)?;
    let et = col::<StringArray>(b, "event_type", path)?;
    let pk = col::<StringArray>(b, "partition_key", path)?;
    let rt = col::<UInt64Array>(b, "record_ts", path)?;
    let lc = col::<BooleanArray>(b, "late_clamped", path)?;
    let env = col::<StringArray>(b, "envelope", path)?;
    (0..b.num_rows())
        .map(|i| {
            Ok(Admitted {
                logical_time: lt.value(i),
                event_id: id.value(i).to_owned(),
                coord: SourceCoord {
                    partition: sp.value(i),
                    offset: so.value(i),
                },
                event_type: et.value(i).parse().map_err(|e| SinkError::Corrupt {
                    path: path.to_owned(),
                    message: format!("row {i}: {e}"),
                })?,
                partition_key: pk.value(i).to_owned(),
                record_ts: rt.value(i),
                late_clamped: lc.value(i),
                envelope: env.value(i).to_owned(),
            })
        })
        .collect()
}

/// Schema of receipt files.
pub fn receipts_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("source_partition", DataType::UInt32, false),
        Field::new("source_offset", DataType::UInt64, false),
        Field::new("record_ts", DataType::UInt64, false),
        Field::new("status", DataType::Utf8, false),
        Field::new("reason", DataType::Utf8, true),
        Field::new("detail", DataType::Utf8, false),
        Field::new("event_id", DataType::Utf8, true),
        Field::new("event_type", DataType::Utf8, true),
        Field::new("logical_time", DataType::UInt64, true),
        Field::new("late_clamped", DataType::Boolean, false),
        Field::new("policy_rev", DataType::Utf8, false),
    ]))
}

fn receipt_columns(rows: &[Receipt]) -> Vec<ArrayRef> {
    vec![
        Arc::new(UInt32Array::from_iter_values(
            rows.iter().map(|r| r.coord.partition),
        )),
        Arc::new(UInt64Array::from_iter_values(
            rows.iter().map(|r| r.coord.offset),
        )),
        Arc::new(UInt64Array::from_iter_values(
            rows.iter().map(|r| r.record_ts),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.status.as_str()),
        )),
        Arc::new(StringArray::from_iter(
            rows.iter().map(|r| r.reason.map(ReasonCode::as_str)),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.detail.as_str()),
        )),
        Arc::new(StringArray::from_iter(
            rows.iter().map(|r| r.event_id.as_deref()),
        )),
        Arc::new(StringArray::from_iter(
            rows.iter().map(|r| r.event_type.as_deref()),
        )),
        Arc::new(UInt64Array::from_iter(rows.iter().map(|r| r.logical_time))),
        Arc::new(BooleanArray::from_iter(
            rows.iter().map(|r| Some(r.late_clamped)),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.policy_rev.as_str()),
        )),
    ]
}

/// Encodes receipts sorted by offset (raw bytes are not part of receipts).
pub fn encode_receipts(rows: &[Receipt], path: &str) -> Result<Vec<u8>, SinkError> {
    encode_columns(receipts_schema(), receipt_columns(rows), path)
}

/// Schema of quarantine files: the receipt columns plus the raw bytes.
pub fn quarantine_schema() -> SchemaRef {
    let mut fields: Vec<Field> = receipts_schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.push(Field::new("raw", DataType::Binary, false));
    Arc::new(Schema::new(fields))
}

/// Encodes quarantined receipts with their raw bytes.
pub fn encode_quarantine(rows: &[Receipt], path: &str) -> Result<Vec<u8>, SinkError> {
    let mut columns = receipt_columns(rows);
    columns.push(Arc::new(BinaryArray::from_iter_values(
        rows.iter().map(|r| r.raw.as_deref().unwrap_or_default()),
    )));
    encode_columns(quarantine_schema(), columns, path)
}

fn parse_status(s: &str, path: &str) -> Result<ReceiptStatus, SinkError> {
    match s {
        "ADMITTED" => Ok(ReceiptStatus::Admitted),
        "QUARANTINED" => Ok(ReceiptStatus::Quarantined),
        "DUPLICATE" => Ok(ReceiptStatus::Duplicate),
        other => Err(SinkError::Corrupt {
            path: path.to_owned(),
            message: format!("unknown receipt status {other}"),
        }),
    }
}

/// Decodes a receipts or quarantine file (the latter fills `raw`).
pub fn decode_receipts(bytes: Bytes, path: &str) -> Result<Vec<Receipt>, SinkError> {
    let mut out = Vec::new();
    for b in read_batches(bytes, path)? {
        let sp = col::<UInt32Array>(&b, "source_partition", path)?;
        let so = col::<UInt64Array>(&b, "source_offset", path)?;
        let rt = col::<UInt64Array>(&b, "record_ts", path)?;
        let st = col::<StringArray>(&b, "status", path)?;
        let rs = col::<StringArray>(&b, "reason", path)?;
        let de = col::<StringArray>(&b, "detail", path)?;
        let id = col::<StringArray>(&b, "event_id", path)?;
        let et = col::<StringArray>(&b, "event_type", path)?;
        let lt = col::<UInt64Array>(&b, "logical_time", path)?;
        let lc = col::<BooleanArray>(&b, "late_clamped", path)?;
        let pr = col::<StringArray>(&b, "policy_rev", path)?;
        let raw = b
            .column_by_name("raw")
            .and_then(|c| c.as_any().downcast_ref::<BinaryArray>());
        for i in 0..b.num_rows() {
            let reason = match opt_str(rs, i) {
                None => None,
                Some(s) => Some(ReasonCode::parse(&s).ok_or_else(|| SinkError::Corrupt {
                    path: path.to_owned(),
                    message: format!("unknown reason code {s}"),
                })?),
            };
            out.push(Receipt {
                coord: SourceCoord {
                    partition: sp.value(i),
                    offset: so.value(i),
                },
                record_ts: rt.value(i),
                status: parse_status(st.value(i), path)?,
                reason,
                detail: de.value(i).to_owned(),
                event_id: opt_str(id, i),
                event_type: opt_str(et, i),
                logical_time: (!lt.is_null(i)).then(|| lt.value(i)),
                late_clamped: lc.value(i),
                policy_rev: pr.value(i).to_owned(),
                raw: raw.map(|r| r.value(i).to_vec()),
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(n: u64) -> Vec<Admitted> {
        (0..n)
            .map(|i| Admitted {
                logical_time: 1_000 + i / 3,
                event_id: format!("ev-{i:08}"),
                coord: SourceCoord {
                    partition: (i % 4) as u32,
                    offset: i,
                },
                event_type: [EventType::Authorization, EventType::Login][(i % 2) as usize],
                partition_key: format!("acct-{}", i % 97),
                record_ts: 5_000 + i,
                late_clamped: i % 11 == 0,
                envelope: format!(
                    "{{\"n\":{i},\"pad\":\"{}\"}}",
                    "x".repeat((i % 50) as usize)
                ),
            })
            .collect()
    }

    /// The row-filtered read returns exactly the rows of the type, in file order.
    #[test]
    fn rows_of_one_type_equal_a_filtered_full_decode() {
        let mut all = rows(20_000);
        for (i, r) in all.iter_mut().enumerate() {
            if i % 37 == 5 {
                r.event_type = EventType::Label;
            }
        }
        let bytes = Bytes::from(encode_archive(&all, "x").expect("encodes"));
        let want: Vec<Admitted> = all
            .iter()
            .filter(|r| r.event_type == EventType::Label)
            .cloned()
            .collect();
        assert!(want.len() > 500);
        let got = archive_rows_of_type(bytes.clone(), "x", EventType::Label).expect("reads");
        assert_eq!(got, want);
        assert!(archive_rows_of_type(bytes, "x", EventType::GovFact)
            .expect("reads")
            .is_empty());
    }

    /// `rows` cut into uneven chunks: `step`, `2*step`, `3*step`, ... rows.
    fn uneven_chunks<T>(rows: &[T], step: usize) -> Vec<&[T]> {
        let (mut out, mut at, mut k) = (Vec::new(), 0usize, 1usize);
        while at < rows.len() {
            let end = (at + step * k).min(rows.len());
            out.push(&rows[at..end]);
            at = end;
            k += 1;
        }
        out
    }

    /// Pushing rows in any chunking gives the bytes of encoding them all at once.
    #[test]
    fn streaming_encoder_is_byte_identical_to_one_shot_for_any_chunking() {
        for n in [0u64, 1, 8191, 8192, 8193, 20_000] {
            let all = rows(n);
            let one_shot = encode_archive(&all, "x").expect("encodes");
            for step in [1usize, 7, 1000, 8192, 9000, 30_000] {
                let mut s = StreamingParquet::new(
                    archive_schema(),
                    std::sync::Arc::new(archive_columns),
                    "x",
                )
                .expect("starts");
                for chunk in uneven_chunks(&all, step) {
                    s.push(chunk.iter().cloned()).expect("pushes");
                }
                let streamed = s.finish().expect("finishes");
                assert!(
                    streamed == one_shot,
                    "n={n} step={step}: {} vs {} bytes",
                    streamed.len(),
                    one_shot.len()
                );
                // The same on an encoder thread.
                let mut b = BackgroundParquet::new(
                    archive_schema(),
                    std::sync::Arc::new(archive_columns),
                    "x",
                )
                .expect("starts");
                for chunk in uneven_chunks(&all, step) {
                    b.push(chunk.to_vec()).expect("pushes");
                }
                let background = b.finish().expect("finishes");
                assert!(background == one_shot, "n={n} step={step}: background");
            }
            assert_eq!(
                decode_archive(Bytes::from(one_shot), "x").expect("decodes"),
                all
            );
        }
    }

    /// Rows the encoder has written are dropped by the thread that pushed them (at its next
    /// push or at finish), and every row is dropped exactly once.
    #[test]
    fn background_encoder_returns_rows_to_the_pusher_to_drop() {
        use std::sync::Mutex;
        use std::thread::ThreadId;
        type Drops = Arc<Mutex<Vec<ThreadId>>>;
        struct Tracked(u64, Drops);
        impl Drop for Tracked {
            fn drop(&mut self) {
                if let Ok(mut d) = self.1.lock() {
                    d.push(std::thread::current().id());
                }
            }
        }
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::UInt64, false)]));
        let columns: Columns<Tracked> = Arc::new(|rows: &[Tracked]| {
            vec![Arc::new(UInt64Array::from_iter_values(rows.iter().map(|r| r.0))) as ArrayRef]
        });
        let drops: Drops = Arc::default();
        let n = 3 * ROW_GROUP_ROWS as u64 + 17;
        let mut b = BackgroundParquet::new(schema.clone(), columns.clone(), "x").expect("starts");
        for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
            let rows = chunk.iter().map(|i| Tracked(*i, drops.clone())).collect();
            b.push(rows).expect("pushes");
        }
        let bytes = b.finish().expect("finishes");
        let me = std::thread::current().id();
        let d = drops.lock().expect("not poisoned");
        assert_eq!(d.len() as u64, n, "every row dropped once");
        assert!(
            d.iter().all(|t| *t == me),
            "all dropped on the pushing thread"
        );
        drop(d);
        // The same bytes as encoding the rows in one go.
        let all: Vec<Tracked> = (0..n).map(|i| Tracked(i, drops.clone())).collect();
        let one_shot = encode_columns(schema, columns(&all), "x").expect("encodes");
        assert!(bytes == one_shot);
    }

    /// An encoding error on the encoder thread surfaces at the next push (or at finish), with
    /// the file's path, instead of being lost with the thread.
    #[test]
    fn background_encoder_errors_surface_at_the_next_push() {
        // Columns that do not match the schema: the first row group fails to encode.
        let bad: Columns<Admitted> = std::sync::Arc::new(|_: &[Admitted]| Vec::new());
        let mut b =
            BackgroundParquet::new(archive_schema(), bad, "bad/file.parquet").expect("starts");
        let all = rows(ROW_GROUP_ROWS as u64);
        let mut err = None;
        for _ in 0..100 {
            if let Err(e) = b.push(all.clone()) {
                err = Some(e);
                break;
            }
        }
        let e = err
            .expect("a push reports the encoder's failure")
            .to_string();
        assert!(e.contains("bad/file.parquet"), "{e}");
        let mut b = BackgroundParquet::new(
            archive_schema(),
            std::sync::Arc::new(|_: &[Admitted]| Vec::new()),
            "bad/last.parquet",
        )
        .expect("starts");
        b.push(rows(3)).expect("queued");
        let e = b
            .finish()
            .expect_err("the last row group fails")
            .to_string();
        assert!(e.contains("bad/last.parquet"), "{e}");
    }
}
