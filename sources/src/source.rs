//! The source trait and the timely operator that reads partitions with watermarks.
//!
//! A [`PartitionedSource`] is a set of partitions, each an ordered log of [`RawRecord`]s with
//! offsets and record timestamps. [`ingress_source`] assigns partition `p` to worker
//! `p mod peers`, reads each assigned partition in offset order, hands every record to a
//! [`RecordStamper`] together with the partition's [`PartitionClock`], and holds its timely
//! capability at the worker frontier (see [`WorkerClock`]). Stamped outputs carry their logical
//! time in the data; the timely time of a message is the frontier at which it was emitted,
//! which is never above the logical times it carries. Downstream operators therefore know that
//! every record with logical time `t` has arrived once their input frontier has passed `t`.
//!
//! For the continuous service the operator also
//! - emits a [`CommitPart`] per partition when its frontier passes a commit boundary `E`
//!   (before releasing it): the offset to re-read from after a crash (the start of the receipt
//!   chunk holding the first record whose outputs may not be durable at `E`) and the partition
//!   clock as it was there — everything a restart needs to re-stamp exactly;
//! - journals every idle-floor raise through [`IdleJournal`] before the frontier it implies is
//!   released, and replays journaled raises ([`SourceResume::idle_history`]) when re-reading;
//! - stops reading, holding its capability, once the stop flag is set or a failure is recorded.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::Broadcast;
use timely::dataflow::operators::{ConnectLoop, Feedback, OkErr};
use timely::dataflow::{Scope, StreamVec};

pub use tidemark_operators::commit::{CommitPart, IdleEntry, OutputMark, PartitionResume};
pub use tidemark_operators::PartitionBasis;
use tidemark_operators::{
    Failures, LogicalTime, PartitionClock, RawRecord, RecordStamper, Stamped, WorkerClock,
};

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
    /// Opens a reader on `partition` at `offset` (a resumed run re-reading from a commit).
    fn open_at(&self, partition: u32, offset: u64)
        -> Result<Box<dyn PartitionReader>, SourceError>;
}

/// What the source operator emits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SourceEvent<O> {
    /// A stamped output for one record.
    Item(O),
    /// A partition finished; its consumed offset range.
    Basis(PartitionBasis),
    /// The worker's frontier passed a commit boundary.
    Commit(CommitPart),
}

/// What the source operator emits internally: its events, and the largest event time of an
/// all-idle worker, which only travels around the feedback loop back into every source.
#[derive(Clone)]
enum Raw<O> {
    Event(SourceEvent<O>),
    IdleMax(LogicalTime),
}

/// Makes idle-floor raises durable; called before the frontier they imply is released.
pub type IdleJournal = Arc<dyn Fn(&[IdleEntry]) -> Result<(), String> + Send + Sync>;

/// Reads the output topics' high watermarks; called before the frontier passes a boundary.
pub type BoundaryHook = Arc<dyn Fn(LogicalTime) -> Result<Vec<OutputMark>, String> + Send + Sync>;

/// Told `(partition, first offset, last offset)` of every non-empty batch as it is polled (for
/// latency probes; nothing it observes reaches an output).
pub type PollHook = Arc<dyn Fn(u32, u64, u64) + Send + Sync>;

/// See [`SourceOptions::on_progress`].
pub type ProgressHook = Arc<dyn Fn(&[(u32, u64, LogicalTime)], LogicalTime) + Send + Sync>;

/// State a resumed run starts its partitions from.
#[derive(Clone, Debug, Default)]
pub struct SourceResume {
    /// Per partition: where to re-read from.
    pub partitions: BTreeMap<u32, PartitionResume>,
    /// Per partition: journaled idle-floor raises `(offset, floor)`, sorted, re-applied when
    /// the re-read reaches their offset.
    pub idle_history: BTreeMap<u32, Vec<(u64, LogicalTime)>>,
}

/// Options of the source operator.
#[derive(Clone)]
pub struct SourceOptions {
    /// Allowed lateness in ms (`W_p = max_p - allowed_lateness`).
    pub lateness_ms: u64,
    /// A partition with no records for this long (wall clock) stops holding the frontier back.
    pub idle_timeout: Duration,
    /// Records read per partition per activation.
    pub batch: usize,
    /// Minimum step of idle-floor raises while other partitions are busy (ms).
    pub idle_step_ms: u64,
    /// Commit boundaries are the multiples of this (ms); 0 emits no commit parts.
    pub commit_ms: u64,
    /// Receipt chunk size: resume offsets are chunk starts.
    pub chunk: u64,
    /// Set to stop reading (graceful stop); the capability is held.
    pub stop: Arc<AtomicBool>,
    /// Resume state, for a run continuing from a commit.
    pub resume: Option<Arc<SourceResume>>,
    /// Where idle-floor raises are journaled (none: not journaled).
    pub journal: Option<IdleJournal>,
    /// Called before the frontier passes each commit boundary.
    pub on_boundary: Option<BoundaryHook>,
    /// Called with every polled batch's offsets.
    pub on_poll: Option<PollHook>,
    /// Called after every activation with each assigned partition's (partition, next offset,
    /// watermark) and the worker frontier (metrics).
    pub on_progress: Option<ProgressHook>,
}

impl SourceOptions {
    /// Plain options: no commits, no journal, no resume.
    pub fn new(lateness_ms: u64, idle_timeout: Duration, batch: usize) -> Self {
        SourceOptions {
            lateness_ms,
            idle_timeout,
            batch,
            idle_step_ms: 1_000,
            commit_ms: 0,
            chunk: u64::MAX,
            stop: Arc::default(),
            resume: None,
            journal: None,
            on_boundary: None,
            on_poll: None,
            on_progress: None,
        }
    }
}

struct Assigned {
    reader: Box<dyn PartitionReader>,
    start: u64,
    last_data: Instant,
    done: bool,
    /// Clock and frontier just before each chunk start still needed for a resume.
    chunk_marks: BTreeMap<u64, (PartitionClock, LogicalTime)>,
    /// Offsets of records stamped at or after the last boundary passed, with their times.
    ahead: BTreeMap<u64, LogicalTime>,
    /// Journaled idle raises still to re-apply.
    history: std::collections::VecDeque<(u64, LogicalTime)>,
}

impl Assigned {
    fn resume_state(&mut self, chunk: u64) -> Option<PartitionResume> {
        let first = self
            .ahead
            .keys()
            .next()
            .copied()
            .unwrap_or_else(|| self.reader.next_offset());
        let aligned = (first / chunk.max(1))
            .saturating_mul(chunk.max(1))
            .max(self.start);
        let (&at, (clock, floor)) = self.chunk_marks.range(..=aligned).next_back()?;
        let resume = PartitionResume {
            partition: self.reader.partition(),
            first_offset: self.start,
            offset: at,
            clock: clock.clone(),
            floor: *floor,
        };
        self.chunk_marks = self.chunk_marks.split_off(&at);
        Some(resume)
    }
}

/// Builds the ingress source operator on this worker. Partition `p` is read by worker
/// `p mod peers`. Errors opening or reading a partition are recorded in `failures` (the
/// partition then stops, without a basis) so the job can fail loudly; they never panic.
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
    // All-idle workers tell every source the largest event time they have seen, so that
    // when traffic stops every worker releases past the global maximum, not only its own.
    let (handle, idle_maxima) = scope.feedback::<Vec<LogicalTime>>(1);
    let events: StreamVec<'scope, LogicalTime, Raw<S::Output>> =
        idle_maxima.unary(Pipeline, "IngressSource", move |mut cap, info| {
            let activator = scope.activator_for(info.address);
            let mut assigned: Vec<Assigned> = Vec::new();
            let resume = opts.resume.clone().unwrap_or_default();
            let mut clocks = BTreeMap::new();
            // The restored worker frontier: the lowest saved frontier of this worker's partitions.
            let floor = resume
                .partitions
                .values()
                .filter(|r| r.partition as usize % peers == index)
                .map(|r| r.floor)
                .min()
                .unwrap_or(0);
            match src.partitions() {
                Ok(parts) => {
                    for p in parts.into_iter().filter(|p| *p as usize % peers == index) {
                        let (opened, clock) = match resume.partitions.get(&p) {
                            Some(r) => {
                                let mut clock = r.clock.clone();
                                clock.reset_idle();
                                (src.open_at(p, r.offset), clock)
                            }
                            None => (src.open(p), PartitionClock::new(opts.lateness_ms)),
                        };
                        match opened {
                            Ok(reader) => {
                                let start = reader.next_offset();
                                let mut chunk_marks = BTreeMap::new();
                                chunk_marks.insert(start, (clock.clone(), floor));
                                clocks.insert(p, clock);
                                assigned.push(Assigned {
                                    start,
                                    reader,
                                    last_data: Instant::now(),
                                    done: false,
                                    chunk_marks,
                                    ahead: BTreeMap::new(),
                                    history: resume
                                        .idle_history
                                        .get(&p)
                                        .map(|h| {
                                            h.iter().copied().filter(|e| e.0 >= start).collect()
                                        })
                                        .unwrap_or_default(),
                                })
                            }
                            Err(e) => failures.push(format!("source partition {p}: {e}")),
                        }
                    }
                }
                Err(e) => failures.push(format!("source: {e}")),
            }
            cap.downgrade(&floor);
            let mut clock = WorkerClock::restore(clocks, floor).with_idle_step(opts.idle_step_ms);
            let commit_ms = opts.commit_ms;
            let chunk = opts.chunk.max(1);
            let mut passed: LogicalTime = floor.checked_div(commit_ms).map_or(0, |b| b * commit_ms);
            let mut cap = Some(cap);
            let mut buf: Vec<RawRecord> = Vec::with_capacity(opts.batch);
            let mut others_max: Option<LogicalTime> = None;
            let mut proposed: Option<LogicalTime> = None;
            move |input, output| {
                input.for_each(|_, data| {
                    for m in data.drain(..) {
                        others_max = Some(others_max.map_or(m, |o| o.max(m)));
                    }
                });
                clock.set_peer_max(others_max);
                let Some(c) = cap.as_mut() else { return };
                if opts.stop.load(Ordering::Relaxed) || failures.any() {
                    // Stop reading; hold the frontier where it is (nothing is closed early).
                    return;
                }
                let mut any_idle = false;
                for a in assigned.iter_mut().filter(|a| !a.done) {
                    let p = a.reader.partition();
                    buf.clear();
                    let status = match a.reader.poll(opts.batch, &mut buf) {
                        Ok(s) => s,
                        Err(e) => {
                            failures.push(format!("source partition {p}: {e}"));
                            return;
                        }
                    };
                    let now = Instant::now();
                    if let (Some(hook), Some(first), Some(last)) =
                        (&opts.on_poll, buf.first(), buf.last())
                    {
                        hook(p, first.coord.offset, last.coord.offset);
                    }
                    if !buf.is_empty() {
                        a.last_data = now;
                        clock.set_idle(p, false);
                    } else if status == ReadStatus::Idle
                        && now.duration_since(a.last_data) >= opts.idle_timeout
                    {
                        clock.set_idle(p, true);
                    }
                    any_idle |= status == ReadStatus::Idle;
                    let wfloor = clock.floor();
                    let Some(pclock) = clock.partition_mut(p) else {
                        continue;
                    };
                    let mut session = output.session(&*c);
                    for rec in buf.drain(..) {
                        let offset = rec.coord.offset;
                        while a.history.front().is_some_and(|h| h.0 <= offset) {
                            if let Some((_, f)) = a.history.pop_front() {
                                pclock.raise_idle_floor(f);
                            }
                        }
                        if commit_ms > 0 && offset % chunk == 0 && offset > a.start {
                            a.chunk_marks.insert(offset, (pclock.clone(), wfloor));
                        }
                        match stamper.stamp(rec, pclock, wfloor) {
                            Stamped::At(t, o) => {
                                if t < wfloor {
                                    failures.push(format!(
                                        "bug: record stamped at {t} below the frontier {wfloor}"
                                    ));
                                }
                                if commit_ms > 0 && t >= passed {
                                    a.ahead.insert(offset, t);
                                }
                                session.give(Raw::Event(SourceEvent::Item(o)));
                            }
                            Stamped::Now(o) => session.give(Raw::Event(SourceEvent::Item(o))),
                        }
                    }
                    if status == ReadStatus::End {
                        a.done = true;
                        session.give(Raw::Event(SourceEvent::Basis(PartitionBasis {
                            partition: p,
                            start: a.start,
                            end: a.reader.next_offset(),
                        })));
                        clock.finish(p);
                    }
                }
                if let Some(m) = clock.all_idle_max() {
                    if proposed.is_none_or(|p| p < m) {
                        output.session(&*c).give(Raw::IdleMax(m));
                        proposed = Some(m);
                    }
                }
                let advanced = clock.advance();
                if let Some(hook) = &opts.on_progress {
                    let parts: Vec<(u32, u64, LogicalTime)> = assigned
                        .iter()
                        .map(|a| {
                            let p = a.reader.partition();
                            let w = clock.partition(p).map_or(0, |c| c.stamp_watermark());
                            (p, a.reader.next_offset(), w)
                        })
                        .collect();
                    hook(&parts, clock.floor());
                }
                match advanced {
                    Some((f, raises)) => {
                        if !raises.is_empty() {
                            if let Some(journal) = &opts.journal {
                                let entries: Vec<IdleEntry> = raises
                                    .iter()
                                    .map(|r| IdleEntry {
                                        partition: r.partition,
                                        offset: assigned
                                            .iter()
                                            .find(|a| a.reader.partition() == r.partition)
                                            .map_or(0, |a| a.reader.next_offset()),
                                        floor: r.floor,
                                    })
                                    .collect();
                                if let Err(e) = journal(&entries) {
                                    failures.push(format!("idle journal: {e}"));
                                    return;
                                }
                            }
                        }
                        if commit_ms > 0 && f / commit_ms * commit_ms > passed {
                            let boundary = f / commit_ms * commit_ms;
                            let mut parts = Vec::new();
                            for a in assigned.iter_mut() {
                                a.ahead.retain(|_, t| *t >= boundary);
                                match a.resume_state(chunk) {
                                    Some(r) => parts.push(r),
                                    None => failures.push(format!(
                                        "bug: no clock mark for the resume offset of partition {}",
                                        a.reader.partition()
                                    )),
                                }
                            }
                            let marks = match &opts.on_boundary {
                                Some(hook) => match hook(boundary) {
                                    Ok(m) => m,
                                    Err(e) => {
                                        failures.push(format!("commit boundary {boundary}: {e}"));
                                        return;
                                    }
                                },
                                None => Vec::new(),
                            };
                            output
                                .session(&*c)
                                .give(Raw::Event(SourceEvent::Commit(CommitPart {
                                    boundary,
                                    partitions: parts,
                                    marks,
                                })));
                            passed = boundary;
                        }
                        c.downgrade(&f);
                    }
                    None => {
                        cap = None;
                        return;
                    }
                }
                if any_idle {
                    activator.activate_after(Duration::from_millis(5));
                } else {
                    activator.activate();
                }
            }
        });
    type Events<'s, O> = StreamVec<'s, LogicalTime, SourceEvent<O>>;
    let (events, maxima): (
        Events<'scope, S::Output>,
        StreamVec<'scope, LogicalTime, LogicalTime>,
    ) = events.ok_err(|e| match e {
        Raw::Event(e) => Ok(e),
        Raw::IdleMax(m) => Err(m),
    });
    maxima.broadcast().connect_loop(handle);
    events
}
