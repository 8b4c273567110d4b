//! tidemark source connectors.
//!
//! - [`source`]: the [`PartitionedSource`](source::PartitionedSource) trait every connector
//!   implements (partitions, offsets, record timestamps, bounded end offsets) and the timely
//!   source operator that reads a worker's partitions (partition `p` on worker `p mod peers`),
//!   keeps per-partition watermarks and advances the worker frontier as SPEC §3 says; it also
//!   resumes partitions from saved clocks, emits commit resume points, journals idle decisions
//!   and releases the frontier past the global maximum when traffic stops.
//! - [`filelog`]: a partitioned file log (one file per partition, offset = record index), the
//!   ingress used by `tidemark world` and the tests.
//! - [`kafka`]: a Kafka topic through rdkafka (manual assignment, start/end offsets, Kafka
//!   record timestamps, retried broker errors, no silent gaps).
//! - [`archive`]: replays admitted events from the Parquet archive, merging an interval's files
//!   batch by batch.
//! - [`error`]: classified source errors.

pub mod archive;
pub mod error;
pub mod filelog;
pub mod kafka;
pub mod source;

pub use error::SourceError;
pub use filelog::FileLog;
pub use kafka::{KafkaConn, KafkaEnd, KafkaSource, KafkaStart};
pub use source::{
    ingress_source, BoundaryHook, CommitPart, IdleEntry, IdleJournal, OutputMark, PartitionBasis,
    PartitionReader, PartitionResume, PartitionedSource, PollHook, ProgressHook, ReadStatus,
    SourceEvent, SourceOptions, SourceResume,
};
