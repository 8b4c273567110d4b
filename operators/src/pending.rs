//! [`Pending`]: items buffered by logical time under one capability, released in time order
//! once the frontier has passed them — the skeleton every time-ordered operator here shares
//! (keyed windows, dedup, the identity graph, the decision fabric, snapshot combination).
//!
//! The buffer holds a single capability, at the earliest buffered time, not one per logical
//! time: a capability per millisecond is a pointstamp per millisecond in timely's progress
//! tracking, which every worker then exchanges, sorts and compacts. One capability gives the
//! same output frontier (the earliest buffered time) at a constant cost per activation.

use std::collections::BTreeMap;

use timely::dataflow::operators::Capability;

use crate::time::LogicalTime;

/// Items buffered by logical time, with one capability at (or below) the earliest of them.
#[derive(Debug)]
pub struct Pending<D> {
    items: BTreeMap<LogicalTime, Vec<D>>,
    held: Option<Capability<LogicalTime>>,
}

impl<D> Default for Pending<D> {
    fn default() -> Self {
        Pending {
            items: BTreeMap::new(),
            held: None,
        }
    }
}

impl<D> Pending<D> {
    /// An empty buffer holding no capability.
    pub fn new() -> Self {
        Self::default()
    }

    /// Buffers `item` at logical `time`, delivered under `cap`. The held capability moves
    /// back to `time` when that is earlier than what it holds (never below `cap`'s own time:
    /// a message's time is a lower bound of the logical times it carries, which a well-formed
    /// input always respects).
    pub fn stash(&mut self, cap: &Capability<LogicalTime>, time: LogicalTime, item: D) {
        let at = time.max(*cap.time());
        if self.held.as_ref().is_none_or(|h| *h.time() > at) {
            self.held = Some(cap.delayed(&at));
        }
        self.items.entry(time).or_default().push(item);
    }

    /// Buffers every item of `batches` (drained) at its logical time, delivered under `cap`.
    pub fn stash_all<'a>(
        &mut self,
        cap: &Capability<LogicalTime>,
        batches: impl IntoIterator<Item = &'a mut Vec<D>>,
        time: impl Fn(&D) -> LogicalTime,
    ) where
        D: 'a,
    {
        for batch in batches {
            for item in batch.drain(..) {
                self.stash(cap, time(&item), item);
            }
        }
    }

    /// The earliest buffered time.
    pub fn first_time(&self) -> Option<LogicalTime> {
        self.items.first_key_value().map(|(t, _)| *t)
    }

    /// True when nothing is buffered.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Removes the items of the earliest buffered time when `ready` holds for it.
    pub fn pop_if(
        &mut self,
        ready: impl FnOnce(LogicalTime) -> bool,
    ) -> Option<(LogicalTime, Vec<D>)> {
        let t = self.first_time()?;
        if !ready(t) {
            return None;
        }
        self.items.pop_first()
    }

    /// The held capability: its time is at or below every buffered time and every time
    /// released since the last [`Self::settle`], so outputs of those times may use it.
    pub fn capability(&self) -> Option<&Capability<LogicalTime>> {
        self.held.as_ref()
    }

    /// Ends an activation: the held capability moves up to the earliest buffered time, or is
    /// released when nothing is buffered.
    pub fn settle(&mut self) {
        match (self.first_time(), self.held.as_mut()) {
            (None, _) => self.held = None,
            (Some(t), Some(h)) if t > *h.time() => h.downgrade(&t),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use timely::dataflow::channels::pact::Pipeline;
    use timely::dataflow::operators::generic::Operator;
    use timely::dataflow::operators::vec::ToStream;
    use timely::dataflow::operators::{Inspect, Probe};

    /// Items come out in time order, each time once the frontier has passed it, and the output
    /// frontier never passes a buffered item (checked by the downstream inspect against the
    /// stamp of every output message).
    #[test]
    fn releases_in_time_order_behind_the_frontier() {
        let mut times: Vec<u64> = (0..200u64).map(|i| (i * 7919) % 97).collect();
        let input = times.clone();
        let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = got.clone();
        timely::execute_directly(move |worker| {
            worker.dataflow::<LogicalTime, _, _>(|scope| {
                let out: timely::dataflow::StreamVec<'_, LogicalTime, u64> = input
                    .clone()
                    .to_stream(scope)
                    .unary_frontier(Pipeline, "P", |_cap, _| {
                        let mut pending: Pending<u64> = Pending::new();
                        move |(input, frontier), output| {
                            input.for_each_stamp(|cap, data| {
                                let Some(cap) = cap.retain_least(output.output_index()) else {
                                    return;
                                };
                                pending.stash_all(&cap, data, |t| *t);
                            });
                            while let Some((t, items)) =
                                pending.pop_if(|t| !frontier.less_equal(&t))
                            {
                                let Some(c) = pending.capability() else { break };
                                assert!(*c.time() <= t);
                                output.session(c).give_iterator(items.into_iter());
                            }
                            pending.settle();
                        }
                    });
                out.inspect_core(move |event| {
                    if let Ok((stamp, data)) = event {
                        for t in data {
                            assert!(
                                stamp.iter().all(|s| s <= t),
                                "message time {stamp:?} above its item {t}"
                            );
                            sink.lock().map(|mut g| g.push(*t)).ok();
                        }
                    }
                })
                .probe();
            });
        });
        times.sort();
        let got = got.lock().map(|g| g.clone()).unwrap_or_default();
        assert_eq!(got, times);
    }
}
