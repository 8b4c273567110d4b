//! tidemark sinks: everything that writes primary truths.
//!
//! - [`root`]: where a data root lives (a local directory or `s3://bucket/prefix`).
//! - [`store`]: a write-once view of an `object_store` (local filesystem or S3): writing the
//!   same object again with identical bytes is a no-op, with different bytes an error;
//!   transient failures are retried with backoff and counted.
//! - [`lease`]: one writer per data root (`flock` locally, a conditional-write lease object on
//!   S3).
//! - [`parquet`]: canonical Parquet encodings of archive rows, receipts and quarantine records
//!   (fixed row-group size, fixed writer metadata), the streaming encoder that writes a file a
//!   row group at a time with the same bytes, and their (batch-wise) decoders.
//! - [`dataset`]: typed training-dataset files, their decoder and the canonical dataset hash.
//! - [`manifest`]: the archive manifest (files, sha256, row counts, logical-time ranges, basis).
//! - [`writers`]: timely operators that encode interval files as their chunks arrive and receipt
//!   chunks, and write them.
//! - [`commit`]: the durability barrier, commit points under `ckpt/` and the manifest.
//! - [`kafka`]: the idempotent Kafka producer and the operator appending streams to topics.
//! - [`layout`]: object paths under the prefixes of SPEC §2.

pub mod audit;
pub mod commit;
pub mod dataset;
pub mod error;
pub mod kafka;
pub mod layout;
pub mod lease;
pub mod manifest;
pub mod parquet;
pub mod root;
pub mod store;
pub mod writers;

pub use error::SinkError;
pub use manifest::{FileEntry, FileKind, Manifest};
pub use root::Root;
pub use store::{PutOutcome, RetryPolicy, StoreStats, WriteOnceStore};
