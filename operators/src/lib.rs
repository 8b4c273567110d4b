//! Generic timely building blocks for tidemark and the small shared types every
//! other crate speaks: logical time, raw ingress records and their coordinates, per-partition
//! watermark clocks, stable hashing, fixed-width key ids and bucketing, windowed dedup, keyed
//! sliding windows in groups with incrementally kept state digests and expiry, the streaming of
//! rows into per-interval, per-bucket files as the frontier passes them, decision tags, audit,
//! decision-detail and dataset rows (labels, splits), and the commit-protocol records (resume
//! points, output marks, idle journal entries).
//!
//! Nothing in this crate performs I/O; every operator here is a pure function of its input
//! streams and their frontiers, which is what makes online runs and replays agree.

pub mod commit;
pub mod dataset;
pub mod decision;
pub mod dedup;
pub mod failpoint;
pub mod failures;
pub mod hashing;
pub mod ingest;
pub mod interval;
pub mod keyed;
pub mod pending;
pub mod reason;
pub mod record;
pub mod spelled;
pub mod time;
pub mod watermark;
pub mod window;

pub use dedup::{DedupDecision, DedupKeyed, WindowedDedup};
pub use failures::Failures;
pub use interval::{CloseIntervals, IntervalChunk};
pub use pending::Pending;
pub use reason::ReasonCode;
pub use record::{PartitionBasis, RawRecord, SourceCoord};
pub use time::LogicalTime;
pub use watermark::{IdleRaise, PartitionClock, RecordStamper, Stamped, WorkerClock};
