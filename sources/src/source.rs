//! The source trait and the timely operator that reads partitions with watermarks.
//!
//! A [`PartitionedSource`] is a set of partitions, each an ordered log of [`RawRecord`]s with
//! offsets and record timestamps. [`ingress_source`] assigns partition `p` to worker
//! `p mod peers`, reads each assigned partition in offset order, hands every record to a
//! [`RecordStamper`] together with the partition's [`PartitionClock`], and holds its timely
//! capability at the worker frontier (the minimum watermark over unfinished, non-idle
//! partitions). Stamped outputs carry their logical time in the data; the timely time of a
//! message is the frontier at which it was emitted, which is never above the logical times it
//! carries. Downstream operators therefore know that every record with logical time `t` has
//! arrived once their input frontier has passed `t`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use timely::dataflow::operators::generic::operator::source;
use timely::dataflow::{Scope, StreamVec};

pub use tidemark_operators::PartitionBasis;
use tidemark_operators::{Failures, LogicalTime, RawRecord, RecordStamper, Stamped, WorkerClock};

use crate::error::SourceError;

/// Result of one poll of a partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadStatus {
    /// Records were read (possibly fewer than asked); more may follow immediately.
    Records,
    /// Nothing available right now; the partition is not at its end.
    Idle,
    /// The partition reached its end (bounded run); no more records will come.
    End,
}

/// A reader of one partition, positioned at an offset.
pub trait PartitionReader: Send {
    /// The partition read.
    fn partition(&self) -> u32;
    /// The offset of the next record to be returned.
    fn next_offset(&self) -> u64;
    /// Appends up to `max` records, in offset order, to `out`.
    fn poll(&mut self, max: usize, out: &mut Vec<RawRecord>) -> Result<ReadStatus, SourceError>;
}

/// A partitioned, offset-addressed log (file log, Kafka topic).
pub trait PartitionedSource: Send + Sync {
    /// All partitions, `0..N`.
    fn partitions(&self) -> Result<Vec<u32>, SourceError>;
    /// Opens a reader on `partition` at its start position.
    fn open(&self, partition: u32) -> Result<Box<dyn PartitionReader>, SourceError>;
}

/// What the source operator emits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SourceEvent<O> {
    /// A stamped output for one record.
    Item(O),
    /// A partition finished; its consumed offset range.
    Basis(PartitionBasis),
}

/// Options of the source operator.
#[derive(Clone, Debug)]
pub struct SourceOptions {
    /// Allowed lateness in ms (`W_p = max_p - allowed_lateness`).
    pub lateness_ms: u64,
    /// A partition with no records for this long (wall clock) stops holding the frontier back.
    pub idle_timeout: Duration,
    /// Records read per partition per activation.
    pub batch: usize,
}

struct Assigned {
    reader: Box<dyn PartitionReader>,
    start: u64,
    last_data: Instant,
    done: bool,
}

/// Builds the ingress source operator on this worker. Partition `p` is read by worker
/// `p mod peers`. Errors opening or reading a partition are recorded in `failures` (the
/// partition then stops) so the job can fail loudly; they never panic the worker.
pub fn ingress_source<'scope, S>(
    scope: Scope<'scope, LogicalTime>,
    src: Arc<dyn PartitionedSource>,
    mut stamper: S,
    opts: SourceOptions,
    failures: Failures,
) -> StreamVec<'scope, LogicalTime, SourceEvent<S::Output>>
where
    S: RecordStamper,
    S::Output: timely::ExchangeData,
{
    let index = scope.index();
    let peers = scope.peers();
    source(scope, "IngressSource", move |cap, info| {
        let activator = scope.activator_for(info.address);
        let mut assigned: Vec<Assigned> = Vec::new();
        match src.partitions() {
            Ok(parts) => {
                for p in parts.into_iter().filter(|p| *p as usize % peers == index) {
                    match src.open(p) {
                        Ok(reader) => assigned.push(Assigned {
                            start: reader.next_offset(),
                            reader,
                            last_data: Instant::now(),
                            done: false,
                        }),
                        Err(e) => failures.push(format!("source partition {p}: {e}")),
                    }
                }
            }
            Err(e) => failures.push(format!("source: {e}")),
        }
        let mut clock = WorkerClock::new(
            assigned.iter().map(|a| a.reader.partition()),
            opts.lateness_ms,
        );
        let mut cap = Some(cap);
        let mut buf: Vec<RawRecord> = Vec::with_capacity(opts.batch);
        move |output| {
            let Some(c) = cap.as_mut() else { return };
            let mut any_idle = false;
            for a in assigned.iter_mut().filter(|a| !a.done) {
                let p = a.reader.partition();
                buf.clear();
                let status = match a.reader.poll(opts.batch, &mut buf) {
                    Ok(s) => s,
                    Err(e) => {
                        failures.push(format!("source partition {p}: {e}"));
                        ReadStatus::End
                    }
                };
                let now = Instant::now();
                if !buf.is_empty() {
                    a.last_data = now;
                    clock.set_idle(p, false);
                } else if status == ReadStatus::Idle
                    && now.duration_since(a.last_data) >= opts.idle_timeout
                {
                    clock.set_idle(p, true);
                }
                any_idle |= status == ReadStatus::Idle;
                let floor = clock.floor();
                if let Some(pclock) = clock.partition_mut(p) {
                    let mut session = output.session(&*c);
                    for rec in buf.drain(..) {
                        match stamper.stamp(rec, pclock, floor) {
                            Stamped::At(t, o) => {
                                if t < floor {
                                    failures.push(format!(
                                        "bug: record stamped at {t} below the frontier {floor}"
                                    ));
                                }
                                session.give(SourceEvent::Item(o));
                            }
                            Stamped::Now(o) => session.give(SourceEvent::Item(o)),
                        }
                    }
                    if status == ReadStatus::End {
                        a.done = true;
                        session.give(SourceEvent::Basis(PartitionBasis {
                            partition: p,
                            start: a.start,
                            end: a.reader.next_offset(),
                        }));
                    }
                }
                if a.done {
                    clock.finish(p);
                }
                match clock.advance() {
                    Some(f) => c.downgrade(&f),
                    None => break,
                }
            }
            if clock.all_finished() {
                cap = None;
            } else if any_idle {
                activator.activate_after(Duration::from_millis(5));
            } else {
                activator.activate();
            }
        }
    })
}
