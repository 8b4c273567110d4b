//! Cutting rows into per-interval, per-bucket files, streamed as the frontier passes.
//!
//! Primary-truth files (archive, audit) are cut by logical-time interval and a fixed number of
//! buckets, never by worker or batch: [`CloseIntervals::close_intervals`] routes each row to the
//! worker owning its bucket and buffers it by logical time. Rows at time `t` are final once the
//! input frontier passes `t`; they are then sorted and emitted as the next [`IntervalChunk`] of
//! their `(interval, bucket)`, so a file's rows leave memory as soon as they are final instead
//! of when the interval closes. When the frontier passes the end of an interval, the last chunk
//! of each of its non-empty buckets carries `last = true`. Rows are emitted in the row type's
//! `Ord`, which must order by logical time first; the concatenated chunks of a file are
//! therefore a function of the input collection alone. Logical times travel in the rows; a
//! message's timely time is only a lower bound for them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;
use timely::dataflow::StreamVec;

use crate::time::{interval_start, LogicalTime};

/// The next sorted rows of one `(interval, bucket)` file. A file's chunks arrive in order on
/// one worker; the one with `last` set ends it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntervalChunk<R> {
    /// Inclusive start of the interval (aligned to the interval length).
    pub interval_start: LogicalTime,
    /// Exclusive end of the interval.
    pub interval_end: LogicalTime,
    /// The bucket.
    pub bucket: u32,
    /// The next rows, sorted, all after every row of earlier chunks.
    pub rows: Vec<R>,
    /// True on the file's last chunk (the frontier passed the interval's end).
    pub last: bool,
}

/// Extension trait: cut a stream of rows into closed, sorted `(interval, bucket)` batches.
pub trait CloseIntervals<'scope, R> {
    /// Buffers rows by `(interval of length interval_ms, bucket)` and logical time and emits
    /// them in sorted chunks as the input frontier passes their times (see the module docs).
    /// `key` maps a row to its `(logical time, bucket)`.
    fn close_intervals<K>(
        self,
        name: &str,
        interval_ms: u64,
        key: K,
    ) -> StreamVec<'scope, LogicalTime, IntervalChunk<R>>
    where
        K: Fn(&R) -> (LogicalTime, u32) + Clone + 'static;
}

/// Open intervals: capability at the interval start, and per bucket the rows by logical time.
type Pending<R> = BTreeMap<
    LogicalTime,
    (
        Capability<LogicalTime>,
        BTreeMap<u32, BTreeMap<LogicalTime, Vec<R>>>,
    ),
>;

impl<'scope, R> CloseIntervals<'scope, R> for StreamVec<'scope, LogicalTime, R>
where
    R: Ord + timely::ExchangeData + Clone,
{
    fn close_intervals<K>(
        self,
        name: &str,
        interval_ms: u64,
        key: K,
    ) -> StreamVec<'scope, LogicalTime, IntervalChunk<R>>
    where
        K: Fn(&R) -> (LogicalTime, u32) + Clone + 'static,
    {
        let len = interval_ms.max(1);
        let route = key.clone();
        let pact = Exchange::new(move |r: &R| u64::from(route(r).1));
        self.unary_frontier(pact, name, move |_cap, _info| {
            let mut pending: Pending<R> = BTreeMap::new();
            move |(input, frontier), output| {
                input.for_each_stamp(|cap, data| {
                    let Some(cap) = cap.retain_least(output.output_index()) else {
                        return;
                    };
                    for batch in data {
                        for row in batch.drain(..) {
                            let (time, bucket) = key(&row);
                            let start = interval_start(time, len);
                            // Held at the interval's start (never below the message's
                            // time): an open interval must not hold the frontier further back.
                            let at = start.max(*cap.time());
                            let entry = pending
                                .entry(start)
                                .or_insert_with(|| (cap.delayed(&at), BTreeMap::new()));
                            if at < *entry.0.time() {
                                entry.0 = cap.delayed(&at);
                            }
                            entry
                                .1
                                .entry(bucket)
                                .or_default()
                                .entry(time)
                                .or_default()
                                .push(row);
                        }
                    }
                });
                let mut closed = Vec::new();
                for (&start, (cap, buckets)) in pending.iter_mut() {
                    let last = !frontier.less_than(&(start + len));
                    let mut chunks = Vec::new();
                    for (&bucket, times) in buckets.iter_mut() {
                        let mut rows = Vec::new();
                        while let Some(entry) = times.first_entry() {
                            if !last && frontier.less_equal(entry.key()) {
                                break;
                            }
                            let mut at = entry.remove();
                            at.sort();
                            rows.append(&mut at);
                        }
                        if !rows.is_empty() || last {
                            chunks.push(IntervalChunk {
                                interval_start: start,
                                interval_end: start + len,
                                bucket,
                                rows,
                                last,
                            });
                        }
                    }
                    if !chunks.is_empty() {
                        output.session(&*cap).give_iterator(chunks.into_iter());
                    }
                    if last {
                        closed.push(start);
                    } else if let Some(f) = frontier.frontier().iter().min() {
                        // Every row still buffered is at or after the frontier: hold the
                        // capability there, not at the interval's start.
                        if f > cap.time() {
                            cap.downgrade(f);
                        }
                    }
                }
                for start in closed {
                    pending.remove(&start);
                }
            }
        })
    }
}
