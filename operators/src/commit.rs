//! The small types of the commit protocol (SPEC §12), shared by the source that produces them,
//! the coordinator that writes them and the job that resumes from them: where each partition
//! is re-read from, the output-topic marks taken at a boundary, and journaled idle decisions.

use serde::{Deserialize, Serialize};

use crate::time::LogicalTime;
use crate::watermark::PartitionClock;

/// Where a resumed partition restarts: the offset to re-read from and the partition clock
/// just before that offset was first read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionResume {
    /// The partition.
    pub partition: u32,
    /// The first offset this run read of the partition (the basis start of a fresh root).
    pub first_offset: u64,
    /// Offset to re-read from (the start of a receipt chunk, or the partition's first offset).
    pub offset: u64,
    /// The partition clock before `offset` was read.
    pub clock: PartitionClock,
    /// The worker frontier when `offset` was read (a lower bound for every time stamped from
    /// there on).
    pub floor: LogicalTime,
}

/// The high watermark of one output topic partition.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct OutputMark {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: u32,
    /// The next offset to be written.
    pub offset: u64,
}

/// What one worker's source reports when its frontier passes a commit boundary.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitPart {
    /// The boundary `E` passed.
    pub boundary: LogicalTime,
    /// Resume state of each partition of the worker.
    pub partitions: Vec<PartitionResume>,
    /// Output topic high watermarks taken before the frontier passed `E`: every output record
    /// of logical time `>= E` lies at or above them.
    pub marks: Vec<OutputMark>,
}

/// One journaled idle-floor raise: partition `partition`, from offset `offset` on, is judged
/// against at least `floor`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdleEntry {
    /// The partition.
    pub partition: u32,
    /// The next offset of the partition when the raise was decided.
    pub offset: u64,
    /// The idle floor from that offset on.
    pub floor: LogicalTime,
}
