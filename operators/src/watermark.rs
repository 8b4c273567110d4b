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
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PartitionClock {
    max: Option<LogicalTime>,
    lateness: u64,
    idle: bool,
    finished: bool,
    /// The highest worker frontier reached while this partition was idle (0 if never).
    #[serde(default)]
    idle_floor: LogicalTime,
}

impl PartitionClock {
    /// A clock with no records seen and the given allowed lateness (ms).
    pub fn new(lateness_ms: u64) -> Self {
        PartitionClock {
            max: None,
            lateness: lateness_ms,
            idle: false,
            finished: false,
            idle_floor: 0,
        }
    }

    /// The watermark a record of this partition is judged against:
    /// `max(W_p, idle_floor_p)`. It is never below the worker frontier (the frontier only
    /// passes `W_p` while the partition is idle, which raises the idle floor with it).
    pub fn stamp_watermark(&self) -> LogicalTime {
        self.watermark().max(self.idle_floor)
    }

    /// Forgets the idle flag (a restarted process decides idleness afresh).
    pub fn reset_idle(&mut self) {
        self.idle = false;
    }

    /// The idle floor (see the module docs).
    pub fn idle_floor(&self) -> LogicalTime {
        self.idle_floor
    }

    /// Raises the idle floor to `floor` (a journaled decision being replayed); never lowers it.
    pub fn raise_idle_floor(&mut self, floor: LogicalTime) {
        self.idle_floor = self.idle_floor.max(floor);
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
    idle_step: u64,
    peer_max: Option<LogicalTime>,
}

/// An idle-floor raise decided by [`WorkerClock::advance`]: partition `partition`'s idle floor
/// became `floor`. It must be journaled before the frontier is released.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IdleRaise {
    /// The partition.
    pub partition: u32,
    /// Its new idle floor.
    pub floor: LogicalTime,
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
            idle_step: 0,
            peer_max: None,
        }
    }

    /// The largest event time other all-idle workers have reported: when this worker is all
    /// idle too it releases past it, so every worker ends past the global maximum.
    pub fn set_peer_max(&mut self, m: Option<LogicalTime>) {
        self.peer_max = m;
    }

    /// When every unfinished partition is idle, the largest event time they have seen.
    pub fn all_idle_max(&self) -> Option<LogicalTime> {
        let mut live = self.partitions.values().filter(|c| !c.finished).peekable();
        live.peek()?;
        let mut max = None;
        for c in live {
            if !c.idle {
                return None;
            }
            max = max.max(c.max);
        }
        max
    }

    /// Restores a worker clock from saved partition clocks and frontier (a resumed run).
    pub fn restore(partitions: BTreeMap<u32, PartitionClock>, floor: LogicalTime) -> Self {
        WorkerClock {
            partitions,
            floor,
            idle_step: 0,
            peer_max: None,
        }
    }

    /// While some partitions are busy and others idle, the frontier passes an idle partition's
    /// own watermark only in steps of at least `step_ms`, so idle-floor raises (each journaled
    /// by the caller) stay rare. 0 raises on every advance.
    pub fn with_idle_step(mut self, step_ms: u64) -> Self {
        self.idle_step = step_ms;
        self
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

    /// Recomputes the frontier and returns it with the idle-floor raises it implies
    /// (`None` when all partitions are finished). The frontier is the minimum watermark over
    /// unfinished, non-idle partitions; when every unfinished partition is idle, one past the
    /// largest event time any of them (or any all-idle peer worker) has seen (or unchanged if
    /// none has seen any). Above an
    /// idle partition's own stamp watermark it moves only in steps of `idle_step` (or to the
    /// all-idle release). It never moves backwards.
    pub fn advance(&mut self) -> Option<(LogicalTime, Vec<IdleRaise>)> {
        let live: Vec<&PartitionClock> = self.partitions.values().filter(|c| !c.finished).collect();
        if live.is_empty() {
            return None;
        }
        let busy = live.iter().filter(|c| !c.idle).map(|c| c.watermark()).min();
        let candidate = match busy {
            Some(m) => {
                // Up to the idle partitions' own watermarks nothing they will stamp changes.
                let free = live
                    .iter()
                    .filter(|c| c.idle)
                    .map(|c| c.stamp_watermark())
                    .min()
                    .map_or(m, |w| m.min(w.max(self.floor)));
                if m > free && m < free.saturating_add(self.idle_step) {
                    free
                } else {
                    m
                }
            }
            None => live
                .iter()
                .filter_map(|c| c.max)
                .chain(self.peer_max)
                .max()
                .map_or(self.floor, |m| m.saturating_add(1)),
        };
        self.floor = self.floor.max(candidate);
        let floor = self.floor;
        let mut raises = Vec::new();
        for (p, c) in self.partitions.iter_mut() {
            if c.idle && !c.finished && c.stamp_watermark() < floor {
                c.idle_floor = floor;
                raises.push(IdleRaise {
                    partition: *p,
                    floor,
                });
            }
        }
        Some((floor, raises))
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
        assert_eq!(w.advance(), Some((10, vec![])));
        w.set_idle(0, true);
        let raise = IdleRaise {
            partition: 0,
            floor: 20,
        };
        assert_eq!(w.advance(), Some((20, vec![raise])));
        assert_eq!(w.partition(0).unwrap().stamp_watermark(), 20);
        w.set_idle(0, false);
        // Partition 0 is back at 10, but the frontier never regresses.
        assert_eq!(w.advance(), Some((20, vec![])));
        w.finish(0);
        w.finish(1);
        assert_eq!(w.advance(), None);
        assert!(w.all_finished());
    }

    #[test]
    fn all_idle_releases_past_the_largest_event_time() {
        let mut w = WorkerClock::new([0, 1], 5);
        w.partition_mut(0).unwrap().observe(100);
        w.partition_mut(1).unwrap().observe(70);
        assert_eq!(w.advance().map(|a| a.0), Some(65));
        w.set_idle(0, true);
        w.set_idle(1, true);
        let (floor, raises) = w.advance().unwrap();
        assert_eq!(floor, 101);
        assert_eq!(raises.len(), 2);
        // A record at 100 or below is now late for either partition; 101 is on time.
        assert_eq!(w.partition(1).unwrap().stamp_watermark(), 101);
    }

    #[test]
    fn idle_raises_come_in_steps() {
        let mut w = WorkerClock::new([0, 1], 0).with_idle_step(50);
        w.partition_mut(0).unwrap().observe(10);
        w.set_idle(0, true);
        w.partition_mut(1).unwrap().observe(40);
        // 40 is within one step of partition 0's watermark (10): hold at 10.
        assert_eq!(w.advance(), Some((10, vec![])));
        w.partition_mut(1).unwrap().observe(70);
        let (floor, raises) = w.advance().unwrap();
        assert_eq!(floor, 70);
        assert_eq!(
            raises,
            vec![IdleRaise {
                partition: 0,
                floor: 70
            }]
        );
        // Further progress within a step of the raised idle floor waits again.
        w.partition_mut(1).unwrap().observe(100);
        assert_eq!(w.advance(), Some((70, vec![])));
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
