//! Closing per-interval, per-bucket batches once the frontier has passed them.
//!
//! Primary-truth files (archive, audit) are cut by logical-time interval and a fixed number of
//! buckets, never by worker or batch: [`CloseIntervals::close_intervals`] routes each row to the
//! worker owning its bucket, buffers rows per `(interval, bucket)`, and when the input frontier
//! passes the end of an interval emits one [`ClosedBatch`] per non-empty bucket with its rows
//! sorted. The output is therefore a function of the input collection alone. Logical times travel
//! in the rows; a message's timely time is only a lower bound for them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;
use timely::dataflow::StreamVec;

use crate::time::{interval_start, LogicalTime};

/// All rows of one `(interval, bucket)`, sorted by the row type's `Ord`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClosedBatch<R> {
    /// Inclusive start of the interval (aligned to the interval length).
    pub interval_start: LogicalTime,
    /// Exclusive end of the interval.
    pub interval_end: LogicalTime,
    /// The bucket.
    pub bucket: u32,
    /// Sorted rows.
    pub rows: Vec<R>,
}

/// Extension trait: cut a stream of rows into closed, sorted `(interval, bucket)` batches.
pub trait CloseIntervals<'scope, R> {
    /// Buffers rows by `(interval of length interval_ms, bucket)` and emits each batch once the
    /// input frontier has passed the interval's end.
    /// `key` maps a row to its `(logical time, bucket)`.
    fn close_intervals<K>(
        self,
        name: &str,
        interval_ms: u64,
        key: K,
    ) -> StreamVec<'scope, LogicalTime, ClosedBatch<R>>
    where
        K: Fn(&R) -> (LogicalTime, u32) + Clone + 'static;
}

type Pending<R> = BTreeMap<LogicalTime, (Capability<LogicalTime>, BTreeMap<u32, Vec<R>>)>;

impl<'scope, R> CloseIntervals<'scope, R> for StreamVec<'scope, LogicalTime, R>
where
    R: Ord + timely::ExchangeData + Clone,
{
    fn close_intervals<K>(
        self,
        name: &str,
        interval_ms: u64,
        key: K,
    ) -> StreamVec<'scope, LogicalTime, ClosedBatch<R>>
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
                            entry.1.entry(bucket).or_default().push(row);
                        }
                    }
                });
                let closed: Vec<LogicalTime> = pending
                    .keys()
                    .copied()
                    .filter(|start| !frontier.less_than(&(start + len)))
                    .collect();
                for start in closed {
                    if let Some((cap, buckets)) = pending.remove(&start) {
                        let mut session = output.session(&cap);
                        for (bucket, mut rows) in buckets {
                            rows.sort();
                            session.give(ClosedBatch {
                                interval_start: start,
                                interval_end: start + len,
                                bucket,
                                rows,
                            });
                        }
                    }
                }
            }
        })
    }
}
