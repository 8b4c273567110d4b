//! tidemark sinks: everything that writes primary truths.
//!
//! - [`store`]: a write-once view of an `object_store` (local filesystem by default): writing
//!   the same object again with identical bytes is a no-op, with different bytes an error.
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
pub mod manifest;
pub mod parquet;
pub mod store;
pub mod writers;

pub use error::SinkError;
pub use manifest::{FileEntry, FileKind, Manifest};
pub use store::{PutOutcome, WriteOnceStore};
