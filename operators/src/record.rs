//! Raw ingress records and their coordinates in a partitioned log.

use serde::{Deserialize, Serialize};

/// Where a record came from: ingress partition and offset within it.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
pub struct SourceCoord {
    /// Ingress partition.
    pub partition: u32,
    /// Offset of the record within the partition (record index for file logs).
    pub offset: u64,
}

/// One record as read from a partitioned log, before any validation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RawRecord {
    /// Partition and offset.
    pub coord: SourceCoord,
    /// The producer/broker record timestamp (epoch ms), like a Kafka record timestamp.
    pub record_ts: u64,
    /// The raw value bytes exactly as produced.
    pub bytes: Vec<u8>,
    /// Record headers (name, value) in the order the producer sent them; empty for file logs.
    #[serde(default)]
    pub headers: Vec<(String, Vec<u8>)>,
}

/// The offset range of one partition that a run consumed: `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PartitionBasis {
    /// The partition.
    pub partition: u32,
    /// First offset read.
    pub start: u64,
    /// One past the last offset read.
    pub end: u64,
}
