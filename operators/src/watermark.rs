//! Per-partition watermarks and the worker frontier (SPEC §3).
//!
//! For each partition `p` a [`PartitionClock`] keeps `max_p`, the largest event time admitted as
//! on time so far, and the watermark `W_p = max_p - allowed_lateness` (0 before any record). A
//! [`WorkerClock`] combines the clocks of the partitions a worker reads into the worker's source
//! frontier: the minimum `W_p` over partitions that are neither finished nor idle, never moving
//! backwards. Both are plain state machines with no wall clock inside; the caller decides when a
//! partition is idle and records that decision.

use std::collections::BTreeMap;

use crate::time::LogicalTime;

/// Watermark state of one partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionClock {
    max: Option<LogicalTime>,
    lateness: u64,
    idle: bool,
    finished: bool,
}

impl PartitionClock {
    /// A clock with no records seen and the given allowed lateness (ms).
    pub fn new(lateness_ms: u64) -> Self {
        PartitionClock {
            max: None,
            lateness: lateness_ms,
            idle: false,
            finished: false,
        }
    }

    /// The largest on-time event time observed, if any.
    pub fn max(&self) -> Option<LogicalTime> {
        self.max
    }

    /// `W_p = max_p - allowed_lateness` (saturating), or 0 before any record.
    pub fn watermark(&self) -> LogicalTime {
        self.max.map_or(0, |m| m.saturating_sub(self.lateness))
    }

    /// Records an on-time event time; `max_p` only grows.
    pub fn observe(&mut self, event_time: LogicalTime) {
        self.max = Some(self.max.map_or(event_time, |m| m.max(event_time)));
    }
}

/// The source frontier of one worker over the partitions assigned to it.
#[derive(Clone, Debug, Default)]
pub struct WorkerClock {
    partitions: BTreeMap<u32, PartitionClock>,
    floor: LogicalTime,
}

impl WorkerClock {
    /// A worker clock over `partitions`, each with the same allowed lateness.
    pub fn new(partitions: impl IntoIterator<Item = u32>, lateness_ms: u64) -> Self {
        WorkerClock {
            partitions: partitions
                .into_iter()
                .map(|p| (p, PartitionClock::new(lateness_ms)))
                .collect(),
            floor: 0,
        }
    }

    /// The clock of partition `p`, if assigned to this worker.
    pub fn partition(&self, p: u32) -> Option<&PartitionClock> {
        self.partitions.get(&p)
    }

    /// Mutable access to the clock of partition `p`.
    pub fn partition_mut(&mut self, p: u32) -> Option<&mut PartitionClock> {
        self.partitions.get_mut(&p)
    }

    /// The current frontier (never decreases). Records below it are late even if they are on
    /// time for their own partition (this can only happen after a partition was idle).
    pub fn floor(&self) -> LogicalTime {
        self.floor
    }

    /// Marks partition `p` idle (it stops holding the frontier back) or active again.
    pub fn set_idle(&mut self, p: u32, idle: bool) {
        if let Some(c) = self.partitions.get_mut(&p) {
            c.idle = idle;
        }
    }

    /// Whether partition `p` is currently marked idle.
    pub fn is_idle(&self, p: u32) -> bool {
        self.partitions.get(&p).is_some_and(|c| c.idle)
    }

    /// Marks partition `p` finished (bounded run reached its end offset).
    pub fn finish(&mut self, p: u32) {
        if let Some(c) = self.partitions.get_mut(&p) {
            c.finished = true;
        }
    }

    /// True when every assigned partition is finished (or none is assigned).
    pub fn all_finished(&self) -> bool {
        self.partitions.values().all(|c| c.finished)
    }

    /// Recomputes the frontier: the minimum watermark over unfinished, non-idle partitions; when
    /// every unfinished partition is idle, the minimum over all unfinished ones. Returns `None`
    /// when all partitions are finished. The frontier never moves backwards.
    pub fn advance(&mut self) -> Option<LogicalTime> {
        let live = self.partitions.values().filter(|c| !c.finished);
        let busy = live
            .clone()
            .filter(|c| !c.idle)
            .map(|c| c.watermark())
            .min();
        let candidate = match busy {
            Some(m) => Some(m),
            None => live.map(|c| c.watermark()).min(),
        };
        let candidate = candidate?;
        self.floor = self.floor.max(candidate);
        Some(self.floor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watermark_trails_max_by_lateness() {
        let mut c = PartitionClock::new(100);
        assert_eq!(c.watermark(), 0);
        c.observe(1_000);
        assert_eq!(c.watermark(), 900);
        c.observe(500);
        assert_eq!(c.watermark(), 900);
        c.observe(50);
        assert_eq!(c.max(), Some(1_000));
    }

    #[test]
    fn worker_frontier_is_min_of_busy_partitions_and_monotone() {
        let mut w = WorkerClock::new([0, 1], 0);
        w.partition_mut(0).unwrap().observe(10);
        w.partition_mut(1).unwrap().observe(20);
        assert_eq!(w.advance(), Some(10));
        w.set_idle(0, true);
        assert_eq!(w.advance(), Some(20));
        w.set_idle(0, false);
        // Partition 0 is back at 10, but the frontier never regresses.
        assert_eq!(w.advance(), Some(20));
        w.finish(0);
        w.finish(1);
        assert_eq!(w.advance(), None);
        assert!(w.all_finished());
    }
}

/// What a [`RecordStamper`] decided for one record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stamped<O> {
    /// Emit `O` at this logical time (must be `>=` the worker frontier passed to the stamper).
    At(LogicalTime, O),
    /// Emit `O` at the worker's current frontier; its time carries no meaning (e.g. a
    /// quarantine receipt for a record that never got a logical time).
    Now(O),
}

/// Turns raw records of one partition, in offset order, into stamped outputs, maintaining the
/// partition's watermark clock. Implemented by the Ingestion Gate; called by source operators.
pub trait RecordStamper: 'static {
    /// What is emitted per record.
    type Output;
    /// Stamps `record`. `clock` is the record's partition clock (its watermark is the one in
    /// force before this record); `floor` is the worker frontier, below which nothing may be
    /// stamped.
    fn stamp(
        &mut self,
        record: crate::record::RawRecord,
        clock: &mut PartitionClock,
        floor: LogicalTime,
    ) -> Stamped<Self::Output>;
}
