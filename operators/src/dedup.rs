//! Windowed, non-recursive deduplication by key (SPEC §5).
//!
//! A candidate with key `k` at logical time `t` is a duplicate when another candidate with the
//! same key has logical time `s` with `t - window < s < t`, or `s == t` and a smaller tie-break
//! (ingress partition, offset). "Another candidate" means every candidate seen, duplicates
//! included: the rule depends on what was seen, not on what was admitted, so an independent
//! implementation can reproduce it. Decisions for time `t` are made once the input frontier has
//! passed `t`, when every candidate at `t` and before is known. Logical times travel in the data;
//! a message's timely time is only a lower bound for the logical times it carries.

use rustc_hash::FxHashMap as HashMap;

use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::StreamVec;

use crate::hashing::stable_hash;
use crate::pending::Pending;
use crate::time::LogicalTime;

/// A candidate that can be deduplicated.
pub trait DedupKeyed {
    /// The dedup key (the event id).
    fn dedup_key(&self) -> &str;
    /// The candidate's logical time (carried in the data; the message's timely time is a
    /// lower bound for it).
    fn time(&self) -> LogicalTime;
    /// The tie-break among candidates at the same logical time (smaller wins).
    fn tiebreak(&self) -> (u32, u64);
}

/// Outcome of deduplication for one candidate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DedupDecision {
    /// No other candidate with the same key falls in the window before it.
    First,
    /// Another candidate with the same key was seen in the window.
    Duplicate,
}

/// Extension trait: windowed dedup of a stream of candidates.
pub trait WindowedDedup<'scope, D> {
    /// Decides [`DedupDecision`] for every candidate; `window_ms` is the dedup window.
    fn dedup_window(self, window_ms: u64) -> StreamVec<'scope, LogicalTime, (D, DedupDecision)>;
}

impl<'scope, D> WindowedDedup<'scope, D> for StreamVec<'scope, LogicalTime, D>
where
    D: DedupKeyed + timely::ExchangeData,
{
    fn dedup_window(self, window_ms: u64) -> StreamVec<'scope, LogicalTime, (D, DedupDecision)> {
        let pact = Exchange::new(|d: &D| stable_hash(d.dedup_key().as_bytes()));
        self.unary_frontier(pact, "WindowedDedup", move |_cap, _info| {
            let mut pending: Pending<D> = Pending::new();
            // Per key: times (and tie-breaks) seen, in increasing time order.
            let mut seen: HashMap<String, Vec<LogicalTime>> = HashMap::default();
            let mut since_sweep = 0usize;
            move |(input, frontier), output| {
                input.for_each_stamp(|cap, data| {
                    let Some(cap) = cap.retain_least(output.output_index()) else {
                        return;
                    };
                    pending.stash_all(&cap, data, D::time);
                });
                let mut out: Vec<(D, DedupDecision)> = Vec::new();
                let out_cap = pending.capability().cloned();
                while let Some((t, mut batch)) = pending.pop_if(|t| !frontier.less_equal(&t)) {
                    batch.sort_by(|a, b| {
                        (a.dedup_key(), a.tiebreak()).cmp(&(b.dedup_key(), b.tiebreak()))
                    });
                    let mut prev_key: Option<String> = None;
                    for d in batch {
                        let key = d.dedup_key();
                        let same_time_dup = prev_key.as_deref() == Some(key);
                        let times = seen.entry(key.to_owned()).or_default();
                        // Drop times that can never be in the window of t or later.
                        let stale = times.partition_point(|&s| s.saturating_add(window_ms) <= t);
                        times.drain(..stale);
                        let window_dup = times.iter().any(|&s| s < t);
                        if !same_time_dup {
                            times.push(t);
                            prev_key = Some(key.to_owned());
                        }
                        let decision = if same_time_dup || window_dup {
                            DedupDecision::Duplicate
                        } else {
                            DedupDecision::First
                        };
                        out.push((d, decision));
                    }
                    since_sweep += 1;
                    // Sweep keys whose window has passed, amortised over the keys held.
                    if since_sweep >= seen.len().max(4096) {
                        since_sweep = 0;
                        seen.retain(|_, times| {
                            times
                                .last()
                                .is_some_and(|&s| s.saturating_add(window_ms) > t)
                        });
                    }
                }
                pending.settle();
                // One message per activation, not one per logical time: the capability of the
                // earliest time processed is valid for every later one.
                if let Some(c) = out_cap.filter(|_| !out.is_empty()) {
                    output.session(&c).give_iterator(out.drain(..));
                }
            }
        })
    }
}
